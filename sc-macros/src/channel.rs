//! `#[channel("rooms/{id}", message = ChatMsg)]` on a struct with named fields: a typed channel,
//! and its contract: `subscribe = anyone | authenticated | server | guard_fn` (default `anyone`;
//! `server`: no client) and `publish = server | authenticated | anyone | guard_fn` (default
//! `server`: clients may not publish). Where clients may publish, their messages must deserialize
//! as the message type. The words win over a guard fn of the same name: write `self::server`.
//! `history = N` (at least 1) with `history_ttl = "30s" | "5m" | "1h" | "2d"` (default 5 minutes)
//! keeps the channel's history for recovery (`ChannelContract::history`). The flags `presence`
//! and `join_leave` (which implies `presence`), anywhere among the arguments, keep the channel's
//! presence, with join/leave events for `join_leave` (`ChannelContract::presence`).
//!
//! The pattern is checked by `sc-pattern`, the grammar sc-core matches names with at run time,
//! with every mistake reported in its compile-time wording; its captures must be exactly the
//! struct's fields. Generated, all through sc-core's public API:
//! `TypedChannel` (`PATTERN`, `Message`), `ChannelTarget<Message>` (so publishing another type
//! does not compile), `FromChannelName` (the `Channel<Room>` extractor; a name that does not match
//! is an `InvalidChannelError`), `Display` (the name), inherent `PATTERN`, `name()` and `parse()`,
//! and `Register` (`App::channel_contract_at`: the contract, with the TypeScript types of the
//! message and captures, and overlap checks at startup).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use sc_pattern::{ChannelPattern, Segment};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Fields, Ident, Item, ItemStruct, Lit, LitStr, Type};

use crate::attr::{compact, Args, Errors, Spec, Value};
use crate::handler_fn::source;

const SPEC: Spec = Spec {
    macro_name: "channel",
    options: &["message", "subscribe", "publish", "history", "history_ttl"],
    example: "#[channel(\"rooms/{id}\", message = ChatMsg)]",
};

/// The attribute's model.
struct ChannelAttr {
    /// The pattern literal (errors about captures and fields point here).
    pattern: LitStr,
    /// The parsed pattern: each capture fills the field of its name.
    parsed: ChannelPattern,
    /// `message = T`: the one type published on the channel.
    message: Type,
    /// `subscribe = ..`: who may subscribe from a client.
    subscribe: Access,
    /// `publish = ..`: who may publish from a client.
    publish: Access,
    /// `history = N, history_ttl = ".."`: publications kept per channel, and for how many
    /// seconds (default [`DEFAULT_HISTORY_TTL`]).
    history: Option<(usize, u64)>,
    /// `presence` / `join_leave`: `Some(join_leave)` when the channel keeps presence.
    presence: Option<bool>,
}

/// The `history_ttl` of a channel declared with `history = N` alone: 5 minutes.
const DEFAULT_HISTORY_TTL: u64 = 300;

/// Reads `history = N` and `history_ttl = "5m"`, reporting mistakes into `errors`.
fn parse_history(
    size: Option<crate::attr::NamedArg>,
    ttl: Option<crate::attr::NamedArg>,
    errors: &mut Errors,
) -> Option<(usize, u64)> {
    let ttl = ttl.map(|arg| {
        let parsed = match &arg.value {
            Value::Expr(Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            })) => parse_duration(&lit.value()),
            _ => None,
        };
        if parsed.is_none() {
            errors.push(syn::Error::new(
                arg.value.span(),
                format!(
                    "`history_ttl` takes a duration string of a number and a unit (`s`, `m`, `h` or `d`) greater than 0, e.g. `history_ttl = \"5m\"`, not `{}`",
                    compact(&arg.value)
                ),
            ));
        }
        (arg.key.span(), parsed)
    });
    let Some(size) = size else {
        if let Some((span, _)) = ttl {
            errors.push(syn::Error::new(
                span,
                "`history_ttl` needs `history = N` (how many publications to keep), e.g. `history = 100, history_ttl = \"5m\"`",
            ));
        }
        return None;
    };
    let parsed = match &size.value {
        Value::Expr(Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        })) => lit.base10_parse::<usize>().ok().filter(|n| *n >= 1),
        _ => None,
    };
    if parsed.is_none() {
        errors.push(syn::Error::new(
            size.value.span(),
            format!(
                "`history` takes how many publications to keep per channel, an integer of at least 1, e.g. `history = 100`, not `{}`",
                compact(&size.value)
            ),
        ));
    }
    let ttl = match ttl {
        Some((_, parsed)) => parsed?,
        None => DEFAULT_HISTORY_TTL,
    };
    Some((parsed?, ttl))
}

/// `"30s"`, `"5m"`, `"1h"`, `"2d"` -> seconds; `None` for anything else or 0.
fn parse_duration(text: &str) -> Option<u64> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let number: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    number.checked_mul(scale).filter(|s| *s > 0)
}

/// Who may do an action from a client, as written.
enum Access {
    /// Not given: the default (`anyone` for subscribe, `server` for publish).
    Default,
    /// `anyone`, `authenticated` or `server`: the `Access` variant, spanned on the word.
    Keyword(&'static str, Span),
    /// The path of a guard function.
    Guard(syn::Path),
}

/// The words `subscribe = ..` and `publish = ..` take besides a guard's path.
const ACCESS_WORDS: [(&str, &str); 3] = [
    ("anyone", "Anyone"),
    ("authenticated", "Authenticated"),
    ("server", "Server"),
];

/// Reads `subscribe = ..` / `publish = ..`, reporting mistakes into `errors`.
fn parse_access(arg: Option<crate::attr::NamedArg>, key: &str, errors: &mut Errors) -> Access {
    let Some(arg) = arg else {
        return Access::Default;
    };
    let path = match &arg.value {
        Value::Type(Type::Path(p)) if p.qself.is_none() => Some(p.path.clone()),
        Value::Expr(Expr::Path(p)) if p.qself.is_none() => Some(p.path.clone()),
        _ => None,
    };
    let expected = if key == "publish" {
        "`server` (the default), `authenticated`, `anyone` or the path of a guard fn"
    } else {
        "`anyone` (the default), `authenticated`, `server` (no client) or the path of a guard fn"
    };
    let Some(path) = path else {
        errors.push(syn::Error::new(
            arg.value.span(),
            format!(
                "`{key}` takes {expected}, e.g. `{key} = authenticated`, not `{}`",
                compact(&arg.value)
            ),
        ));
        return Access::Default;
    };
    if let Some(word) = path.get_ident().map(Ident::to_string) {
        if let Some((_, variant)) = ACCESS_WORDS.iter().find(|(w, _)| *w == word) {
            return Access::Keyword(variant, path.span());
        }
    }
    Access::Guard(path)
}

impl ChannelAttr {
    /// The capture names, in pattern order.
    fn captures(&self) -> Vec<&str> {
        self.parsed.captures().collect()
    }
}

/// The struct's model.
struct ChannelStruct {
    /// The struct, emitted unchanged.
    item: ItemStruct,
    /// Named fields (none for a unit struct), in declaration order.
    fields: Vec<(Ident, Type)>,
}

fn parse_attr(attr: TokenStream, errors: &mut Errors) -> Option<ChannelAttr> {
    let mut args = errors.ok(Args::parse(attr))?;
    let message = args.take("message", errors);
    let subscribe = args.take("subscribe", errors);
    let subscribe = parse_access(subscribe, "subscribe", errors);
    let publish = args.take("publish", errors);
    let publish = parse_access(publish, "publish", errors);
    let history = args.take("history", errors);
    let history_ttl = args.take("history_ttl", errors);
    let history = parse_history(history, history_ttl, errors);
    let presence_flag = args.take_flag("presence", errors);
    let join_leave = args.take_flag("join_leave", errors);
    let presence =
        (presence_flag.is_some() || join_leave.is_some()).then_some(join_leave.is_some());
    let mut positional = args.positional.drain(..);
    let mut pattern = None;
    match positional.next() {
        None => errors.push(syn::Error::new(
            Span::call_site(),
            format!("missing channel pattern: write `{}`", SPEC.example),
        )),
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        })) => match ChannelPattern::parse_with_all_errors(&lit.value()) {
            Ok(parsed) => pattern = Some((lit, parsed)),
            Err(problems) => {
                let value = lit.value();
                for p in problems {
                    errors.push(syn::Error::new(lit.span(), p.in_attribute(&value)));
                }
            }
        },
        Some(other) => errors.push(syn::Error::new(
            other.span(),
            format!(
                "the channel pattern must be a string literal, like `{}`, not `{}`",
                SPEC.example,
                compact(&other)
            ),
        )),
    }
    for extra in positional {
        errors.push(syn::Error::new(
            extra.span(),
            format!(
                "unexpected `{}`: `#[channel]` takes one pattern and `message = T`, e.g. `{}`",
                compact(&extra),
                SPEC.example
            ),
        ));
    }
    let unknown_options = args.finish(&SPEC, errors);
    let message = match message {
        None if unknown_options => None,
        None => {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "missing `message = T`: a typed channel carries one message type, e.g. `{}`",
                    SPEC.example
                ),
            ));
            None
        }
        Some(arg) => match arg.value {
            Value::Type(ty) => Some(ty),
            Value::Expr(e) => {
                errors.push(syn::Error::new(
                    e.span(),
                    format!(
                        "`message` takes the message type, like `message = ChatMsg`, not `{}`",
                        compact(&e)
                    ),
                ));
                None
            }
        },
    };
    let (pattern, parsed) = pattern?;
    Some(ChannelAttr {
        pattern,
        parsed,
        message: message?,
        subscribe,
        publish,
        history,
        presence,
    })
}

fn parse_struct(item: TokenStream, errors: &mut Errors) -> Option<ChannelStruct> {
    let item = match errors.ok(syn::parse2::<Item>(item))? {
        Item::Struct(s) => s,
        other => {
            let span = match &other {
                Item::Enum(e) => e.enum_token.span,
                Item::Union(u) => u.union_token.span,
                Item::Fn(f) => f.sig.fn_token.span,
                _ => other.span(),
            };
            errors.push(syn::Error::new(
                span,
                format!(
                    "`#[channel]` goes on a struct whose named fields are the pattern's captures, e.g. `{} struct Room {{ id: u64 }}`",
                    SPEC.example
                ),
            ));
            return None;
        }
    };
    let mut ok = true;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            item.generics.span(),
            "a `#[channel]` struct cannot be generic: its fields are parsed from and written into channel names",
        ));
        ok = false;
    }
    let fields = match &item.fields {
        Fields::Named(named) => named
            .named
            .iter()
            .filter_map(|f| Some((f.ident.clone()?, f.ty.clone())))
            .collect(),
        Fields::Unit => Vec::new(),
        Fields::Unnamed(u) => {
            errors.push(syn::Error::new(
                u.span(),
                "a `#[channel]` struct has named fields, one per capture: `struct Room { id: u64 }`",
            ));
            ok = false;
            Vec::new()
        }
    };
    ok.then_some(ChannelStruct { item, fields })
}

fn unraw(ident: &Ident) -> String {
    let s = ident.to_string();
    s.strip_prefix("r#").map(str::to_owned).unwrap_or(s)
}

/// Captures and fields must be the same names.
fn check_fields(attr: &ChannelAttr, strukt: &ChannelStruct, errors: &mut Errors) {
    let captures = attr.captures();
    let fields: Vec<String> = strukt.fields.iter().map(|(i, _)| unraw(i)).collect();
    let lonely_captures: Vec<&str> = captures
        .iter()
        .copied()
        .filter(|c| !fields.iter().any(|f| f == c))
        .collect();
    let lonely_fields: Vec<&String> = fields
        .iter()
        .filter(|f| !captures.contains(&f.as_str()))
        .collect();
    let name = &strukt.item.ident;
    let pattern = attr.pattern.value();
    let span = attr.pattern.span();
    if let ([capture], [field]) = (lonely_captures.as_slice(), lonely_fields.as_slice()) {
        errors.push(syn::Error::new(
            span,
            format!(
                "capture `{{{capture}}}` has no field and field `{field}` of `{name}` is not in \"{pattern}\": rename one so they match, e.g. `{{{field}}}`"
            ),
        ));
        return;
    }
    for capture in lonely_captures {
        errors.push(syn::Error::new(
            span,
            format!(
                "capture `{{{capture}}}` has no field: add `{capture}: T` to `{name}` (`T`: `FromStr + Display`, e.g. `String` or `u64`)"
            ),
        ));
    }
    for field in lonely_fields {
        errors.push(syn::Error::new(
            span,
            format!(
                "field `{field}` of `{name}` is not in the pattern: add `{{{field}}}` to \"{pattern}\", or remove the field"
            ),
        ));
    }
}

/// `#[channel(..)]` on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let attr = parse_attr(attr, &mut errors);
    let strukt = parse_struct(item, &mut errors);
    if let (Some(attr), Some(strukt)) = (&attr, &strukt) {
        check_fields(attr, strukt, &mut errors);
    }
    errors.finish()?;
    let (Some(attr), Some(strukt)) = (attr, strukt) else {
        return Err(syn::Error::new(Span::call_site(), "invalid `#[channel]`"));
    };
    Ok(generate(&attr, &strukt))
}

fn generate(attr: &ChannelAttr, strukt: &ChannelStruct) -> TokenStream {
    let item = &strukt.item;
    let ident = &item.ident;
    let vis = &item.vis;
    let pattern = &attr.pattern;
    let message = &attr.message;
    let private = quote!(::sc_core::__private);
    let field_of = |capture: &str| {
        strukt
            .fields
            .iter()
            .find(|(f, _)| unraw(f) == capture)
            .map(|(f, ty)| (f.clone(), ty.clone()))
    };

    // Display: literal text, and each capture's field written by `CaptureValue`.
    let mut writes = Vec::new();
    for (i, segment) in attr.parsed.segments().iter().enumerate() {
        let slash = if i == 0 { "" } else { "/" };
        match segment {
            Segment::Literal(text) => {
                let text = format!("{slash}{text}");
                writes.push(quote!(__sc_f.write_str(#text)?;));
            }
            Segment::Capture(capture) => {
                if !slash.is_empty() {
                    writes.push(quote!(__sc_f.write_str(#slash)?;));
                }
                if let Some((field, ty)) = field_of(capture) {
                    writes.push(quote_spanned!(ty.span()=>
                        <#ty as ::sc_core::__private::CaptureValue>::write_capture(&self.#field, __sc_f)?;
                    ));
                }
            }
        }
    }

    // FromChannelName: match, then parse each capture into its field.
    let captures = attr.captures();
    let count = captures.len();
    let values: Vec<Ident> = (0..count)
        .map(|i| format_ident!("__sc_capture{}", i))
        .collect();
    let inits = captures.iter().zip(&values).filter_map(|(capture, value)| {
        let (field, ty) = field_of(capture)?;
        let parsed = quote_spanned!(ty.span()=>
            <#ty as ::sc_core::__private::CaptureValue>::parse_capture(
                <Self as ::sc_core::__private::TypedChannel>::PATTERN,
                __sc_name,
                #capture,
                #value,
            )?
        );
        Some(quote!(#field: #parsed))
    });
    let message_type = quote_spanned!(message.span()=> type Message = #message;);
    let contract = contract(attr, strukt, ident);
    let source = source(ident);
    let doc_name = format!(
        "This channel's name: `{}` with the fields filled in.",
        pattern.value()
    );

    quote! {
        #item

        const _: () = {
            impl #private::TypedChannel for #ident {
                const PATTERN: &'static ::core::primitive::str = #pattern;
                #message_type
            }

            impl #private::ChannelTarget<#message> for #ident {
                fn channel_name(&self) -> ::std::borrow::Cow<'_, ::core::primitive::str> {
                    ::std::borrow::Cow::Owned(::std::string::ToString::to_string(self))
                }
            }

            impl ::core::fmt::Display for #ident {
                fn fmt(&self, __sc_f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    #(#writes)*
                    ::core::result::Result::Ok(())
                }
            }

            impl #private::FromChannelName for #ident {
                fn from_channel_name(
                    __sc_name: &::core::primitive::str,
                ) -> ::core::result::Result<Self, #private::ScError> {
                    let [#(#values),*] = #private::captures::<#count>(
                        <Self as #private::TypedChannel>::PATTERN,
                        __sc_name,
                    )?;
                    ::core::result::Result::Ok(#ident { #(#inits,)* })
                }
            }

            impl #ident {
                /// The channel-name pattern.
                #[allow(dead_code)]
                #vis const PATTERN: &'static ::core::primitive::str = #pattern;

                #[doc = #doc_name]
                #[allow(dead_code)]
                #vis fn name(&self) -> ::std::string::String {
                    ::std::string::ToString::to_string(self)
                }

                /// Parses a channel name; a name that does not match the pattern is an
                /// `InvalidChannelError`.
                #[allow(dead_code)]
                #vis fn parse(name: &::core::primitive::str) -> ::core::result::Result<Self, #private::ScError> {
                    <Self as #private::FromChannelName>::from_channel_name(name)
                }
            }

            impl #private::Register for #ident {
                fn register(__sc_app: #private::App) -> #private::App {
                    #private::App::channel_contract_at(
                        __sc_app,
                        #contract,
                        #source,
                    )
                }
            }
        };
    }
}

/// `ChannelContract::new(PATTERN).subscribe(..).publish(..)`, with `.message::<M>()` where
/// clients may publish (only then must the message type be `Deserialize`), and the TypeScript
/// types of the message and the captures (`unknown` for types that do not derive `TS`).
fn contract(attr: &ChannelAttr, strukt: &ChannelStruct, ident: &Ident) -> TokenStream {
    let private = quote!(::sc_core::__private);
    let access = |access: &Access| match access {
        Access::Default => None,
        Access::Keyword(variant, span) => {
            let variant = Ident::new(variant, *span);
            Some(quote_spanned!(*span=> #private::Access::#variant))
        }
        Access::Guard(path) => Some(quote_spanned!(path.span()=> #private::Access::guard(#path))),
    };
    let mut tokens = quote!(
        #private::ChannelContract::new(<#ident as #private::TypedChannel>::PATTERN)
    );
    if let Some(subscribe) = access(&attr.subscribe) {
        tokens.extend(quote!(.subscribe(#subscribe)));
    }
    let clients_publish = !matches!(attr.publish, Access::Default | Access::Keyword("Server", _));
    if let Some(publish) = access(&attr.publish) {
        tokens.extend(quote!(.publish(#publish)));
    }
    if clients_publish {
        let message = &attr.message;
        tokens.extend(quote_spanned!(message.span()=> .message::<#message>()));
    }
    let message_ts = crate::ts::probe(&attr.message);
    tokens.extend(quote!(.ts_message(#message_ts)));
    for (field, ty) in &strukt.fields {
        let capture = unraw(field);
        let ts = crate::ts::probe(ty);
        tokens.extend(quote!(.ts_capture(#capture, #ts)));
    }
    if let Some((size, ttl)) = attr.history {
        tokens.extend(quote!(.history(#private::HistoryPolicy::new(
            #size,
            ::core::time::Duration::from_secs(#ttl),
        ))));
    }
    if let Some(join_leave) = attr.presence {
        tokens.extend(quote!(.presence(
            #private::PresencePolicy::new().join_leave(#join_leave)
        )));
    }
    tokens
}

/// On error: the struct as written, plus a `Register` impl that does nothing, so that
/// `handlers![Room]` does not add a second error.
pub(crate) fn fallback(item: TokenStream) -> TokenStream {
    let Ok(strukt) = syn::parse2::<ItemStruct>(item.clone()) else {
        return item;
    };
    if !strukt.generics.params.is_empty() {
        return item;
    }
    let ident = &strukt.ident;
    quote! {
        #item

        const _: () = {
            impl ::sc_core::__private::Register for #ident {
                fn register(__sc_app: ::sc_core::__private::App) -> ::sc_core::__private::App {
                    __sc_app
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `#[channel]` reports for `pattern`: every error, in sc-pattern's compile-time
    /// wording (pinned exactly in sc-pattern's tests and in `tests/ui/channel/fail`).
    fn problems(pattern: &str) -> Vec<String> {
        let tokens = quote!(#pattern, message = ChatMsg);
        let mut errors = Errors::default();
        assert!(parse_attr(tokens, &mut errors).is_none(), "{pattern}");
        errors
            .finish()
            .expect_err(pattern)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn models_valid_patterns() {
        let mut errors = Errors::default();
        let attr = parse_attr(quote!("rooms/{id}/log", message = ChatMsg), &mut errors)
            .expect("a valid attribute");
        assert!(errors.finish().is_ok());
        assert_eq!(
            attr.parsed.segments(),
            [
                Segment::Literal("rooms".into()),
                Segment::Capture("id".into()),
                Segment::Literal("log".into()),
            ]
        );
        assert_eq!(attr.captures(), ["id"]);
    }

    #[test]
    fn explains_each_malformed_pattern() {
        let first = |p: &str| problems(p).remove(0);
        assert_eq!(
            first(""),
            format!(
                "the channel pattern must not be empty: write e.g. `{}`",
                SPEC.example
            )
        );
        assert!(first("a//b").starts_with("empty segment in \"a//b\""));
        assert!(first("a/{id").starts_with("unmatched brace in segment \"{id\""));
        assert!(first("a/x{id}").contains("mixes a capture with other text"));
        assert!(first("a/{1}").contains("is not a valid capture"));
        assert!(first("{id}/{id}").starts_with("duplicate capture `{id}`"));
        assert_eq!(problems("a//{b/{c}{d}").len(), 3);
    }

    #[test]
    fn reads_history_sizes_and_durations() {
        let mut errors = Errors::default();
        let attr = parse_attr(
            quote!("rooms/{id}", message = M, history = 100, history_ttl = "5m"),
            &mut errors,
        )
        .expect("valid");
        assert!(errors.finish().is_ok());
        assert_eq!(attr.history, Some((100, 300)));
        assert_eq!(parse_duration("30s"), Some(30));
        assert_eq!(parse_duration("1h"), Some(3600));
        for bad in ["", "5", "m", "0s", "5 m", "5ms", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        for bad in [
            quote!("r/{id}", message = M, history = 0),
            quote!("r/{id}", message = M, history = 1, history_ttl = "soon"),
            quote!("r/{id}", message = M, history_ttl = "5m"),
        ] {
            let mut errors = Errors::default();
            let _ = parse_attr(bad, &mut errors);
            assert!(errors.finish().is_err());
        }
    }
    #[test]
    fn reads_presence_flags_anywhere() {
        for (tokens, want) in [
            (quote!("r/{id}", message = M), None),
            (quote!("r/{id}", presence, message = M), Some(false)),
            (quote!("r/{id}", message = M, presence), Some(false)),
            (
                quote!("r/{id}", message = M, presence, join_leave),
                Some(true),
            ),
            (quote!("r/{id}", join_leave, message = M), Some(true)),
        ] {
            let mut errors = Errors::default();
            let attr = parse_attr(tokens.clone(), &mut errors).expect("valid");
            assert!(errors.finish().is_ok(), "{tokens}");
            assert_eq!(attr.presence, want, "{tokens}");
        }
        let mut errors = Errors::default();
        let _ = parse_attr(
            quote!("r/{id}", message = M, presence, presence),
            &mut errors,
        );
        let error = errors.finish().expect_err("a duplicate flag");
        assert!(
            error.to_string().contains("duplicate flag `presence`"),
            "{error}"
        );
    }
}
