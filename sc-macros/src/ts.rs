//! The TypeScript types a macro declares for the typed client contract: each `#[event]`'s payload
//! (its payload extractor's `T`) and reply (its return type), each `#[channel]`'s message and
//! captures. A type that derives `TS` is written as such (`TsType::of::<T>()`); any other type is
//! `unknown`, picked at compile time by autoref specialization, so types without the derive keep
//! working unchanged.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{GenericArgument, PathArguments, ReturnType, Type};

use crate::handler_fn::last_segment;

/// `TsType::of::<ty>()` when `ty: TS`, `TsType::unknown()` otherwise.
pub(crate) fn probe(ty: &Type) -> TokenStream {
    quote! {{
        #[allow(unused_imports)]
        use ::sc_core::__private::{ViaTs as _, ViaUnknown as _};
        (&::sc_core::__private::TsProbe::<#ty>::new()).ts_type()
    }}
}

fn simple(name: &str) -> TokenStream {
    let name = syn::Ident::new(name, proc_macro2::Span::call_site());
    quote!(::sc_core::__private::TsType::#name())
}

/// The first type argument of a path type (`T` of `Json<T>`).
fn first_argument(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else {
        return None;
    };
    let PathArguments::AngleBracketed(args) = &p.path.segments.last()?.arguments else {
        return None;
    };
    args.args.iter().find_map(|a| match a {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// sc-core's extractors that read no payload (`FromRequestParts`): a handler ending in one of
/// them takes no payload.
const PARTS_EXTRACTORS: &[&str] = &[
    "Socket",
    "RequestInfo",
    "Auth",
    "MaybeAuth",
    "State",
    "Channel",
    "EventName",
    "WaitForAuth",
    "Exchange",
    "ServerHandle",
];

/// The payload an event handler reads: `Json<T>` / `TryJson<T>` -> `T`, one of sc-core's
/// parts extractors (or no argument) -> `undefined`, anything else (`Raw`, an app's own
/// extractor, a renamed import) -> `unknown`: a payload the typed client must not refuse.
pub(crate) fn payload(args: &[Type]) -> TokenStream {
    let Some(last) = args.last() else {
        return simple("undefined");
    };
    match last_segment(last).as_deref() {
        Some("Json" | "TryJson") => first_argument(last).map_or_else(|| simple("unknown"), probe),
        Some(name) if PARTS_EXTRACTORS.contains(&name) => simple("undefined"),
        _ => simple("unknown"),
    }
}

/// What an invoke answers, from the handler's return type: `Result<T, E>` -> `T`, `Option<T>` ->
/// `T | undefined`, `Json<T>` -> `T`, `()` -> `void`, anything else (`Reply`, `Value`) `unknown`.
pub(crate) fn reply(output: &ReturnType) -> TokenStream {
    match output {
        ReturnType::Default => simple("void"),
        ReturnType::Type(_, ty) => reply_type(ty),
    }
}

fn reply_type(ty: &Type) -> TokenStream {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => simple("void"),
        Type::Paren(p) => reply_type(&p.elem),
        Type::Group(g) => reply_type(&g.elem),
        _ => match (last_segment(ty).as_deref(), first_argument(ty)) {
            (Some("Result"), Some(ok)) => reply_type(ok),
            (Some("Option"), Some(inner)) => {
                let inner = reply_type(inner);
                quote!(::sc_core::__private::TsType::optional(#inner))
            }
            (Some("Json"), Some(inner)) => probe(inner),
            _ => simple("unknown"),
        },
    }
}
