//! `#[event("name")]`: registers an `async fn` as the handler of client transmits and invokes
//! named `name` (`App::event_at`). The name is a string literal, checked here: not empty, not
//! starting with `#` (reserved by the protocol). No options yet; unknown ones are errors. The
//! registration also declares the payload and reply types for the TypeScript contract (`ts.rs`).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr};

use crate::attr::{compact, Args, Errors, Spec};
use crate::handler_fn::{Flavor, HandlerFn};

const SPEC: Spec = Spec {
    macro_name: "event",
    options: &[],
    example: "#[event(\"chat\")]",
};

/// The attribute's model.
struct EventAttr {
    /// The event name, as written (a non-empty literal not starting with `#`).
    name: LitStr,
}

/// Parses `("name")`, reporting every mistake into `errors`.
fn parse_attr(attr: TokenStream, errors: &mut Errors) -> Option<EventAttr> {
    let mut args = errors.ok(Args::parse(attr))?;
    let mut name = None;
    let mut positional = args.positional.drain(..);
    match positional.next() {
        None => errors.push(syn::Error::new(
            Span::call_site(),
            "missing event name: write `#[event(\"chat\")]`",
        )),
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        })) => {
            let value = lit.value();
            if value.is_empty() {
                errors.push(syn::Error::new(
                    lit.span(),
                    "the event name must not be empty: write `#[event(\"chat\")]`",
                ));
            } else if value.starts_with('#') {
                errors.push(syn::Error::new(
                    lit.span(),
                    format!(
                        "event names starting with `#` are reserved by the protocol (`#handshake`, `#subscribe`, ...): write `#[event(\"{}\")]`",
                        value.trim_start_matches('#')
                    ),
                ));
            } else {
                name = Some(EventAttr { name: lit });
            }
        }
        Some(Expr::Path(p)) if p.path.get_ident().is_some() => {
            let ident = compact(&p);
            errors.push(syn::Error::new(
                p.span(),
                format!(
                    "the event name must be a string literal: write `#[event(\"{ident}\")]` (to use a constant, register by hand: `App::event({ident}, handler)`)"
                ),
            ));
        }
        Some(other) => errors.push(syn::Error::new(
            other.span(),
            format!(
                "the event name must be a string literal, like `#[event(\"chat\")]`, not `{}` (to compute a name, register by hand: `App::event(name, handler)`)",
                compact(&other)
            ),
        )),
    }
    for extra in positional {
        errors.push(syn::Error::new(
            extra.span(),
            format!(
                "unexpected `{}`: `#[event]` takes one event name, e.g. `#[event(\"chat\")]`",
                compact(&extra)
            ),
        ));
    }
    let _ = args.finish(&SPEC, errors);
    name
}

/// `#[event(..)]` on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let attr = parse_attr(attr, &mut errors);
    let handler = errors.ok(HandlerFn::parse(item, "`#[event]`", SPEC.example));
    errors.finish()?;
    let (Some(attr), Some(handler)) = (attr, handler) else {
        return Err(syn::Error::new(Span::call_site(), "invalid `#[event]`"));
    };
    let flavor = Flavor {
        convert: quote!(::sc_core::__private::IntoReply::into_reply),
        output: quote!(::sc_core::__private::Reply),
        usable: format_ident!("UsableInEvent"),
        unavailable: &["Channel"],
    };
    let name = &attr.name;
    let payload = crate::ts::payload(&handler.args);
    let reply = crate::ts::reply(&handler.item.sig.output);
    let register = quote! {
        ::sc_core::__private::App::event_types(
            ::sc_core::__private::App::event_at(__sc_app, #name, __sc_handler, __sc_source),
            #name,
            #payload,
            #reply,
        )
    };
    Ok(handler.generate(&flavor, register))
}
