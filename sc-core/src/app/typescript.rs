//! Typed client contracts: the TypeScript declaration file of an app's whole contract (every
//! event's payload and reply type, every declared channel's pattern and message type), rendered
//! at run time by [`App::typescript`](super::App::typescript), written by `sc types` and served
//! at `/sc-types.d.ts`, and the contract's hash, which the handshake carries so a page built
//! against another contract can tell.
//!
//! Rust types become TypeScript through [`TS`](ts_rs::TS) (feature `typescript`, on by default:
//! `#[derive(TS)] #[ts(crate = "sc_core::ts_rs")]`), with serde's attributes honoured. A type
//! without the derive is `unknown` in the file: [`TsType::unknown`], which is what the macros
//! write for such types (they pick [`TsType::of`] when the type implements `TS`).
//!
//! ```
//! use sc_core::prelude::*;
//! use sc_core::app::typescript::TsType;
//! use sc_core::app::contract::ChannelContract;
//!
//! #[derive(Serialize, Deserialize, TS)]
//! #[ts(crate = "sc_core::ts_rs")]
//! struct ChatMsg { text: String }
//!
//! async fn chat(Json(_msg): Json<ChatMsg>) {}
//!
//! let app = App::new()
//!     .event("chat", chat)
//!     .event_types("chat", TsType::of::<ChatMsg>(), TsType::void())
//!     .channel_contract(
//!         ChannelContract::new("rooms/{id}")
//!             .ts_message(TsType::of::<ChatMsg>())
//!             .ts_capture("id", TsType::of::<u64>()),
//!     );
//! let file = app.typescript();
//! assert!(file.contains(r#""chat": { payload: ChatMsg; reply: void }"#));
//! assert!(file.contains("pattern: `rooms/${number}`; message: ChatMsg"));
//! assert!(file.contains("export type ChatMsg = { text: string, };"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::App;

/// A Rust type as TypeScript: the expression used where the type appears (`ChatMsg`,
/// `Array<ChatMsg>`, `string`) and the declarations of the named types it uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TsType {
    expr: String,
    /// Named type -> its declaration (`type ChatMsg = { .. };`, with its docs).
    decls: BTreeMap<String, String>,
}

impl TsType {
    fn plain(expr: &str) -> Self {
        Self {
            expr: expr.to_owned(),
            decls: BTreeMap::new(),
        }
    }

    /// Any value: a type that does not derive `TS`, or a payload read as raw JSON.
    pub fn unknown() -> Self {
        Self::plain("unknown")
    }

    /// No value: an invoke answered without data (a handler returning `()`).
    pub fn void() -> Self {
        Self::plain("void")
    }

    /// No payload: an event whose handler reads none (the client may leave it out).
    pub fn undefined() -> Self {
        Self::plain("undefined")
    }

    /// `T`'s TypeScript (ts-rs), with the declarations of every named type it uses. 64-bit
    /// integers are `number`: JSON has no other integers, and serde_json writes them as numbers.
    #[cfg(feature = "typescript")]
    pub fn of<T: ts_rs::TS + 'static + ?Sized>() -> Self {
        use ts_rs::{TypeVisitor, TS};
        struct Collect<'a> {
            cfg: &'a ts_rs::Config,
            seen: std::collections::HashSet<std::any::TypeId>,
            decls: BTreeMap<String, String>,
        }
        impl TypeVisitor for Collect<'_> {
            fn visit<U: TS + 'static + ?Sized>(&mut self) {
                if !self.seen.insert(std::any::TypeId::of::<U>()) {
                    return;
                }
                // Types with a file of their own are the named ones (derived or declared).
                if U::output_path().is_some() {
                    let mut decl = String::new();
                    if let Some(docs) = U::docs() {
                        decl.push_str(&docs);
                    }
                    let _ = write!(decl, "export {}", U::decl(self.cfg));
                    self.decls.insert(U::ident(self.cfg), decl);
                }
                U::visit_dependencies(self);
                U::visit_generics(self);
            }
        }
        let cfg = ts_rs::Config::new().with_large_int("number");
        let mut collect = Collect {
            cfg: &cfg,
            seen: Default::default(),
            decls: BTreeMap::new(),
        };
        collect.visit::<T>();
        Self {
            expr: T::name(&cfg),
            decls: collect.decls,
        }
    }

    /// `T | undefined`: a reply that may be absent (a handler returning `Option<T>`).
    pub fn optional(self) -> Self {
        Self {
            expr: format!("{} | undefined", self.expr),
            decls: self.decls,
        }
    }

    /// The expression used where the type appears.
    pub fn expr(&self) -> &str {
        &self.expr
    }
}

/// Where the macros pick [`TsType::of`] for types that implement `TS` and [`TsType::unknown`] for
/// the others (autoref specialization: `(&TsProbe::<T>::new()).ts_type()` with both traits in
/// scope resolves to [`ViaTs`] when it applies).
#[doc(hidden)]
pub struct TsProbe<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> TsProbe<T> {
    #[doc(hidden)]
    pub fn new() -> Self {
        Self(std::marker::PhantomData)
    }
}

#[doc(hidden)]
pub trait ViaTs {
    fn ts_type(&self) -> TsType;
}

#[cfg(feature = "typescript")]
impl<T: ts_rs::TS + 'static + ?Sized> ViaTs for TsProbe<T> {
    fn ts_type(&self) -> TsType {
        TsType::of::<T>()
    }
}

#[doc(hidden)]
pub trait ViaUnknown {
    fn ts_type(&self) -> TsType;
}

impl<T: ?Sized> ViaUnknown for &TsProbe<T> {
    fn ts_type(&self) -> TsType {
        TsType::unknown()
    }
}

/// `rooms/{id}` -> `` `rooms/${number}` `` (a capture whose type is a number) or
/// `` `rooms/${string}` ``.
fn pattern_type(pattern: &crate::channel::ChannelPattern, captures: &[(String, TsType)]) -> String {
    use crate::channel::Segment;
    let mut out = String::from("`");
    for (i, segment) in pattern.segments().iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match segment {
            Segment::Literal(text) => {
                for c in text.chars() {
                    if matches!(c, '`' | '\\' | '$') {
                        out.push('\\');
                    }
                    out.push(c);
                }
            }
            Segment::Capture(name) => {
                let number = captures
                    .iter()
                    .any(|(n, t)| n == name.as_str() && t.expr == "number");
                out.push_str(if number { "${number}" } else { "${string}" });
            }
        }
    }
    out.push('`');
    out
}

/// A string as a TypeScript string literal (JSON's syntax is TypeScript's).
fn literal(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// FNV-1a, 64 bits, in hex: stable across builds and platforms (std's hasher is not).
fn fnv1a(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Every TypeScript declaration the app's types need, by name.
fn all_decls(app: &App) -> impl Iterator<Item = (&String, &String)> {
    let events = app.event_types.values().flat_map(|(p, r)| [p, r]);
    let channels = app
        .channels
        .iter()
        .filter_map(|d| d.contract.ts_message.as_ref());
    events.chain(channels).flat_map(|t| t.decls.iter())
}

/// The names the contract file declares besides the app's types.
const RESERVED_NAMES: &[&str] = &["Contract", "Events", "Channels", "contract", "contractHash"];

/// Two different Rust types with the same TypeScript name (`ChatMsg` in two modules) would make
/// one declaration silently replace the other, and a type named like one of the file's own
/// declarations would clash with it: startup errors instead.
pub(crate) fn check_names(app: &App) -> Result<(), String> {
    let mut seen: BTreeMap<&String, &String> = BTreeMap::new();
    for (name, decl) in all_decls(app) {
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(format!(
                "a type is named `{name}` in the TypeScript contract, a name the contract file declares itself: give it another name with `#[ts(rename = \"..\")]`"
            ));
        }
        match seen.insert(name, decl) {
            Some(other) if other != decl => {
                return Err(format!(
                    "two different types are named `{name}` in the TypeScript contract: give one another name with `#[ts(rename = \"..\")]`"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The contract's types (everything but the hash), deterministic: events by name, channels by
/// pattern, declarations by name.
fn body(app: &App) -> String {
    let decls: BTreeMap<&String, &String> = all_decls(app).collect();
    let mut events: Vec<(&String, String, String)> = Vec::new();
    let mut names: Vec<&String> = app.events.keys().collect();
    names.sort();
    for name in names {
        let (payload, reply) = match app.event_types.get(name) {
            Some((p, r)) => (p.expr.clone(), r.expr.clone()),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        };
        events.push((name, payload, reply));
    }
    let mut channels: Vec<(String, String)> = Vec::new();
    for declared in &app.channels {
        let contract = &declared.contract;
        let message = contract
            .ts_message
            .as_ref()
            .map_or_else(|| "unknown".to_owned(), |t| t.expr.clone());
        channels.push((
            pattern_type(&declared.pattern, &contract.ts_captures),
            message,
        ));
    }
    channels.sort();

    let mut out = String::new();
    for decl in decls.values() {
        let _ = writeln!(out, "{decl}\n");
    }
    out.push_str(
        "/** Every event: what a client sends (`payload`) and what an invoke answers (`reply`). */\nexport type Events = {\n",
    );
    for (name, payload, reply) in &events {
        let _ = writeln!(
            out,
            "  {}: {{ payload: {payload}; reply: {reply} }};",
            literal(name)
        );
    }
    out.push_str("};\n\n/** Every declared channel: the names it matches and its message type. */\nexport type Channels =");
    if channels.is_empty() {
        out.push_str(" never");
    }
    for (pattern, message) in &channels {
        let _ = write!(out, "\n  | {{ pattern: {pattern}; message: {message} }}");
    }
    out.push_str(";\n");
    out
}

/// The files `sc types` writes for the declaration file `out` (`public/sc-types.d.ts`): `out`,
/// its companion module (`public/sc-types.js`) and the browser client's declarations
/// (`public/socketcluster.d.ts`); `None` when `out` names no file.
pub fn files_for(out: &std::path::Path) -> Option<[std::path::PathBuf; 3]> {
    let dir = out.parent().unwrap_or(std::path::Path::new(""));
    let file = out.file_name().and_then(|f| f.to_str())?;
    let stem = file
        .strip_suffix(".d.ts")
        .or_else(|| file.strip_suffix(".ts"))
        .unwrap_or(file);
    if stem.is_empty() {
        return None;
    }
    Some([
        out.to_path_buf(),
        dir.join(format!("{stem}.js")),
        dir.join("socketcluster.d.ts"),
    ])
}

/// What a server computes once when it binds: the contract's hash (the handshake carries it as
/// `contractHash`) and the files it serves (`/sc-types.d.ts`, `/sc-types.js`).
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) hash: String,
    pub(crate) declarations: String,
    pub(crate) module: String,
}

impl Rendered {
    pub(crate) fn of(app: &App) -> Self {
        Self {
            hash: hash(app),
            declarations: render(app),
            module: module(app),
        }
    }
}

/// The hash of the app's contract, as the handshake carries it (`contractHash`).
pub(crate) fn hash(app: &App) -> String {
    fnv1a(&body(app))
}

/// The whole declaration file.
pub(crate) fn render(app: &App) -> String {
    let body = body(app);
    let hash = fnv1a(&body);
    format!(
        "// The app's contract, generated from its Rust handlers and channels by `sc types`: do not\n\
         // edit, run `sc types` again. Use it with the browser client:\n\
         //   import {{ create }} from './socketcluster.js';\n\
         //   import {{ contract }} from './sc-types.js';\n\
         //   const socket = create({{ contract }});\n\n\
         {body}\n\
         /** The whole contract, for `create<Contract>()`. */\n\
         export interface Contract {{ events: Events; channels: Channels; hash: {hash:?}; }}\n\n\
         /** What `create({{ contract }})` takes: the types, and the hash the server's handshake is\n \
         * compared with (a mismatch emits `contractMismatch`). `sc-types.js` is its value. */\n\
         export declare const contract: {{ readonly hash: {hash:?}; readonly types?: Contract }};\n\
         export declare const contractHash: {hash:?};\n"
    )
}

/// The companion module of the declaration file (`sc-types.js`): the hash the page was built
/// with, at run time.
pub(crate) fn module(app: &App) -> String {
    let hash = hash(app);
    format!(
        "// Generated by `sc types` with sc-types.d.ts: the contract this page was built against.\n\
         export const contractHash = {hash:?};\n\
         export const contract = {{ hash: contractHash }};\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_patterns_escape_template_syntax() {
        assert_eq!(fnv1a(""), "cbf29ce484222325");
        assert_eq!(fnv1a("a"), "af63dc4c8601ec8c");
        let pattern = crate::channel::ChannelPattern::parse("a`b/{id}/c$d").expect("valid");
        assert_eq!(pattern_type(&pattern, &[]), r"`a\`b/${string}/c\$d`");
        assert_eq!(literal("a\"b"), r#""a\"b""#);
        let [d, js, client] =
            files_for(std::path::Path::new("public/sc-types.d.ts")).expect("a file");
        assert_eq!(d, std::path::Path::new("public/sc-types.d.ts"));
        assert_eq!(js, std::path::Path::new("public/sc-types.js"));
        assert_eq!(client, std::path::Path::new("public/socketcluster.d.ts"));
        assert!(files_for(std::path::Path::new("/")).is_none());
    }

    #[cfg(feature = "typescript")]
    #[test]
    fn two_types_of_one_name_fail_validation() {
        mod a {
            #[derive(ts_rs::TS)]
            #[allow(dead_code)]
            pub struct Msg {
                pub text: String,
            }
        }
        mod b {
            #[derive(ts_rs::TS)]
            #[allow(dead_code)]
            pub struct Msg {
                pub n: u32,
            }
        }
        let app = App::new()
            .event_types("x", TsType::of::<a::Msg>(), TsType::void())
            .event_types("y", TsType::of::<a::Msg>(), TsType::void());
        assert_eq!(app.validate(), Ok(()));
        let err = app
            .event_types("z", TsType::of::<b::Msg>(), TsType::void())
            .validate()
            .expect_err("two Msg");
        assert!(
            err.starts_with("two different types are named `Msg`"),
            "{err}"
        );
    }

    #[cfg(feature = "typescript")]
    #[test]
    fn a_type_named_like_the_files_own_declarations_fails_validation() {
        #[derive(ts_rs::TS)]
        #[allow(dead_code)]
        struct Contract {
            pub id: u32,
        }
        let err = App::new()
            .event_types("sign", TsType::of::<Contract>(), TsType::void())
            .validate()
            .expect_err("Contract is the file's own");
        assert!(err.contains("`Contract`"), "{err}");
    }

    #[test]
    fn untyped_events_and_channels_are_unknown_and_the_hash_follows_the_contract() {
        async fn chat() {}
        let app = App::new().event("chat", chat).channel("rooms/{id}");
        let file = render(&app);
        assert!(
            file.contains(r#""chat": { payload: unknown; reply: unknown };"#),
            "{file}"
        );
        assert!(
            file.contains("pattern: `rooms/${string}`; message: unknown"),
            "{file}"
        );
        let typed = app
            .clone()
            .event_types("chat", TsType::undefined(), TsType::void());
        assert_ne!(hash(&app), hash(&typed));
        assert!(file.contains(&format!("hash: {:?}", hash(&app))));
    }
}
