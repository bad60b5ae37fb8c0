// The generated code uses absolute paths: a caller that shadows prelude names still compiles.
#![allow(dead_code)]

use sc_core::prelude::*;

type Result<T> = ::std::result::Result<T, ::std::string::String>;
enum Option {
    Nothing,
}
struct Box;
struct String;
trait Clone {}
trait Send {}
trait Future {}
mod core {}
mod std {}
struct Vec;
fn drop() {}
#[allow(non_camel_case_types)]
struct str;

#[event("chat")]
async fn chat(Json(text): Json<::std::string::String>) -> ::std::result::Result<(), ScError> {
    let _ = text;
    ::std::result::Result::Ok(())
}

#[middleware(subscribe)]
async fn check(Channel(room): Channel<Room>) {
    let _ = room;
}

#[derive(Serialize)]
struct Msg;

#[channel("rooms/{id}/{name}", message = Msg)]
struct Room {
    id: u64,
    name: ::std::string::String,
}

fn main() {
    let _app: App = handlers![chat, check, Room];
    let _: Result<()> = ::std::result::Result::Ok(());
    let _ = Option::Nothing;
}
