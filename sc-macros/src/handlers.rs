//! `handlers![a, b, module::c, Room]`: an `sc_core::App` with each listed item registered in
//! order. Each item is the path of an `#[event]` or `#[middleware]` function (the hidden struct
//! of the same name) or of a `#[channel]` struct; the macro calls its `Register` impl, spanned at
//! the path, so an item without the attribute is an error at that path.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Ident, Path, Token};

use crate::attr::{compact, Errors};

/// The list's model: the items, in order.
struct HandlerList {
    paths: Vec<Path>,
}

fn parse(input: TokenStream, errors: &mut Errors) -> HandlerList {
    let mut paths: Vec<Path> = Vec::new();
    let Some(items) = errors.ok(Punctuated::<Expr, Token![,]>::parse_terminated.parse2(input))
    else {
        return HandlerList { paths };
    };
    for item in items {
        let path = match item {
            Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => p.path,
            other => {
                errors.push(syn::Error::new(
                    other.span(),
                    format!(
                        "expected the path of an `#[event]` or `#[middleware]` function or of a `#[channel]` struct, like `handlers![chat, rooms::Room]`, not `{}`",
                        compact(&other)
                    ),
                ));
                continue;
            }
        };
        if let Some(args) = path
            .segments
            .iter()
            .find(|s| !s.arguments.is_none())
            .map(|s| &s.arguments)
        {
            errors.push(syn::Error::new(
                args.span(),
                format!(
                    "`{}`: items in `handlers![]` take no generic arguments (annotated functions and channels are not generic)",
                    compact(&path)
                ),
            ));
            continue;
        }
        let text = compact(&path);
        if paths.iter().any(|p| compact(p) == text) {
            errors.push(syn::Error::new(
                path.span(),
                format!("`{text}` is listed twice in `handlers![]`: list each item once"),
            ));
            continue;
        }
        paths.push(path);
    }
    HandlerList { paths }
}

/// `handlers![..]`.
pub(crate) fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let list = parse(input, &mut errors);
    errors.finish()?;
    let app = Ident::new("__sc_app", Span::mixed_site());
    let registrations = list.paths.iter().map(|path| {
        let register = quote_spanned!(path.span()=>
            <#path as ::sc_core::__private::Register>::register
        );
        quote!(let #app = #register(#app);)
    });
    Ok(quote! {
        {
            let #app = ::sc_core::__private::App::new();
            #(#registrations)*
            #app
        }
    })
}

/// On error: the errors, then an empty app, so the surrounding code still type-checks.
pub(crate) fn fallback(errors: TokenStream) -> TokenStream {
    quote! {
        {
            #errors
            ::sc_core::__private::App::new()
        }
    }
}
