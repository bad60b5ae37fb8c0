//! `#[middleware(kind)]`: registers an `async fn` as middleware of one kind
//! (`App::middleware_at`). The kind is one of SocketCluster's, in snake_case; which extractors the
//! kind provides is checked at each argument (no socket and no payload in `handshake_ws`, no event
//! name outside events, no channel outside subscribe and publish).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit};

use crate::attr::{compact, did_you_mean, Args, Errors, Spec};
use crate::handler_fn::{Flavor, HandlerFn};

const SPEC: Spec = Spec {
    macro_name: "middleware",
    options: &[],
    example: "#[middleware(subscribe)]",
};

/// One middleware kind.
struct Kind {
    /// As written in the attribute.
    name: &'static str,
    /// The `MiddlewareKind` variant.
    variant: &'static str,
    /// The `__private` trait of extractors available to it.
    usable: &'static str,
    /// Extractors it does not provide.
    unavailable: &'static [&'static str],
}

const NO_EVENT_NO_CHANNEL: &[&str] = &["EventName", "Channel"];
const NO_CHANNEL: &[&str] = &["Channel"];
const NO_EVENT: &[&str] = &["EventName"];

const KINDS: [Kind; 9] = [
    Kind {
        name: "handshake_ws",
        variant: "HandshakeWs",
        usable: "UsableInHandshakeWs",
        unavailable: &[
            "Socket",
            "Auth",
            "EventName",
            "Channel",
            "Json",
            "TryJson",
            "Raw",
            "RawJson",
        ],
    },
    Kind {
        name: "handshake",
        variant: "Handshake",
        usable: "UsableInHandshake",
        unavailable: NO_EVENT_NO_CHANNEL,
    },
    Kind {
        name: "inbound_raw",
        variant: "InboundRaw",
        usable: "UsableInInboundRaw",
        unavailable: NO_EVENT_NO_CHANNEL,
    },
    Kind {
        name: "transmit",
        variant: "Transmit",
        usable: "UsableInTransmit",
        unavailable: NO_CHANNEL,
    },
    Kind {
        name: "invoke",
        variant: "Invoke",
        usable: "UsableInInvoke",
        unavailable: NO_CHANNEL,
    },
    Kind {
        name: "subscribe",
        variant: "Subscribe",
        usable: "UsableInSubscribe",
        unavailable: NO_EVENT,
    },
    Kind {
        name: "publish_in",
        variant: "PublishIn",
        usable: "UsableInPublishIn",
        unavailable: NO_EVENT,
    },
    Kind {
        name: "publish_out",
        variant: "PublishOut",
        usable: "UsableInPublishOut",
        unavailable: NO_EVENT,
    },
    Kind {
        name: "authenticate",
        variant: "Authenticate",
        usable: "UsableInAuthenticate",
        unavailable: NO_EVENT_NO_CHANNEL,
    },
];

fn kind_list() -> String {
    KINDS
        .iter()
        .map(|k| format!("`{}`", k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `HandshakeWs` or `MiddlewareKind::HandshakeWs` -> `handshake_ws`.
fn snake_case(word: &str) -> String {
    let mut out = String::new();
    for (i, c) in word.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// Finds the kind named by `word`, or explains what to write instead.
fn lookup(word: &str, span: Span) -> syn::Result<&'static Kind> {
    if let Some(kind) = KINDS.iter().find(|k| k.name == word) {
        return Ok(kind);
    }
    let snake = snake_case(word);
    if let Some(kind) = KINDS.iter().find(|k| k.name == snake) {
        return Err(syn::Error::new(
            span,
            format!(
                "write the middleware kind in snake_case: `#[middleware({})]`",
                kind.name
            ),
        ));
    }
    let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
    let hint = did_you_mean(&snake, &names)
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    Err(syn::Error::new(
        span,
        format!(
            "unknown middleware kind `{word}`: {hint}expected one of {}",
            kind_list()
        ),
    ))
}

/// Parses `(kind)`, reporting every mistake into `errors`.
fn parse_attr(attr: TokenStream, errors: &mut Errors) -> Option<&'static Kind> {
    let mut args = errors.ok(Args::parse(attr))?;
    let mut kind = None;
    let mut positional = args.positional.drain(..);
    match positional.next() {
        None => errors.push(syn::Error::new(
            Span::call_site(),
            format!(
                "missing middleware kind: write e.g. `#[middleware(subscribe)]`; the kinds are {}",
                kind_list()
            ),
        )),
        Some(Expr::Path(p)) if p.qself.is_none() && !p.path.segments.is_empty() => {
            let last: &Ident = &p.path.segments[p.path.segments.len() - 1].ident;
            if p.path.segments.len() == 1 {
                kind = errors.ok(lookup(&last.to_string(), last.span()));
            } else {
                let snake = snake_case(&last.to_string());
                let msg = match KINDS.iter().find(|k| k.name == snake) {
                    Some(k) => format!("write just the kind: `#[middleware({})]`", k.name),
                    None => format!(
                        "expected a middleware kind, e.g. `#[middleware(subscribe)]`; the kinds are {}",
                        kind_list()
                    ),
                };
                errors.push(syn::Error::new(p.span(), msg));
            }
        }
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        })) => {
            let msg = match lookup(&s.value(), s.span()) {
                Ok(k) => format!(
                    "write the kind without quotes: `#[middleware({})]`",
                    k.name
                ),
                Err(e) => e.to_string(),
            };
            errors.push(syn::Error::new(s.span(), msg));
        }
        Some(other) => errors.push(syn::Error::new(
            other.span(),
            format!(
                "expected a middleware kind, e.g. `#[middleware(subscribe)]`, not `{}`; the kinds are {}",
                compact(&other),
                kind_list()
            ),
        )),
    }
    for extra in positional {
        errors.push(syn::Error::new(
            extra.span(),
            format!(
                "unexpected `{}`: `#[middleware]` takes one kind; to run a function for several kinds, annotate one function per kind",
                compact(&extra)
            ),
        ));
    }
    let _ = args.finish(&SPEC, errors);
    kind
}

/// `#[middleware(..)]` on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let kind = parse_attr(attr, &mut errors);
    let handler = errors.ok(HandlerFn::parse(item, "`#[middleware]`", SPEC.example));
    errors.finish()?;
    let (Some(kind), Some(handler)) = (kind, handler) else {
        return Err(syn::Error::new(
            Span::call_site(),
            "invalid `#[middleware]`",
        ));
    };
    let flavor = Flavor {
        convert: quote!(::sc_core::__private::IntoDecision::into_decision),
        output: quote!(::sc_core::__private::Decision),
        usable: format_ident!("{}", kind.usable),
        unavailable: kind.unavailable,
    };
    let variant = format_ident!("{}", kind.variant);
    let register = quote! {
        ::sc_core::__private::App::middleware_at(
            __sc_app,
            ::sc_core::__private::MiddlewareKind::#variant,
            __sc_handler,
            __sc_source,
        )
    };
    Ok(handler.generate(&flavor, register))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runtime_kind_has_a_name() {
        assert_eq!(KINDS.len(), 9);
        for k in &KINDS {
            assert_eq!(snake_case(k.variant), k.name);
            assert!(lookup(k.name, Span::call_site()).is_ok());
        }
    }

    #[test]
    fn explains_near_misses() {
        let msg = |w: &str| lookup(w, Span::call_site()).err().map(|e| e.to_string());
        assert_eq!(
            msg("PublishIn").as_deref(),
            Some("write the middleware kind in snake_case: `#[middleware(publish_in)]`")
        );
        assert!(msg("subscibe").is_some_and(|m| m.contains("did you mean `subscribe`?")));
        assert!(msg("connect").is_some_and(|m| m.contains("expected one of `handshake_ws`")));
    }
}
