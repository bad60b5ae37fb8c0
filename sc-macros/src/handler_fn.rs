//! The `async fn` under `#[event]` and `#[middleware]`: parsed into a [`HandlerFn`] model and
//! checked, then generated as
//!
//! - the function itself, unchanged;
//! - a hidden struct of the same name (type namespace only, like Rocket's `#[get]`), which is
//!   what `handlers![name]` names;
//! - `impl Handler<Generated>` for that struct: it extracts each argument with its own trait call,
//!   spanned at the argument's type, so a wrong argument is one error at that argument (not a
//!   "not a handler" error about the whole function), then awaits the function and converts its
//!   value with `IntoReply` / `IntoDecision`, spanned at the return type;
//! - `impl Register` for the struct: the `App::event_at` / `App::middleware_at` call, with the
//!   function's name, module, file and line.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Item, ItemFn, ReturnType, Type};

use crate::attr::{compact, Errors};

/// Payload extractors: they consume the payload, so a handler has at most one, last.
const PAYLOAD_EXTRACTORS: [&str; 4] = ["Json", "TryJson", "Raw", "RawJson"];

/// What differs between event handlers and each middleware kind.
pub(crate) struct Flavor {
    /// `IntoReply::into_reply` or `IntoDecision::into_decision` (a path under `__private`).
    pub convert: TokenStream,
    /// `Reply` or `Decision` (a path under `__private`): the generated handler's output.
    pub output: TokenStream,
    /// The `__private` trait listing the extractors available here (`UsableInSubscribe`).
    pub usable: Ident,
    /// Extractors (last path segment) that are not available here: arguments of these types are
    /// checked against `usable`, spanned at the argument.
    pub unavailable: &'static [&'static str],
}

/// An annotated function, checked.
pub(crate) struct HandlerFn {
    /// The function, emitted unchanged.
    pub item: ItemFn,
    /// `#[cfg(..)]` attributes of the function, repeated on the generated items.
    pub cfgs: Vec<Attribute>,
    /// The argument types, in order.
    pub args: Vec<Type>,
    /// Where errors about the returned value point: the return type, or the name for `()`.
    pub output_span: Span,
}

/// Whether an attribute is one of ours (`#[event]`, `#[middleware]`, or with a path).
fn is_handler_attribute(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "event" || s.ident == "middleware")
}

fn cfg_attributes(attrs: &[Attribute]) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .cloned()
        .collect()
}

/// The last path segment's name of a plain path type (`Json` for `sc_core::extract::Json<T>`).
pub(crate) fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(g) => last_segment(&g.elem),
        Type::Paren(p) => last_segment(&p.elem),
        _ => None,
    }
}

/// The first `impl` keyword in some tokens (`impl Trait` in argument position is a generic).
fn find_impl(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|tt| match tt {
        TokenTree::Ident(i) if i == "impl" => Some(i.span()),
        TokenTree::Group(g) => find_impl(g.stream()),
        _ => None,
    })
}

impl HandlerFn {
    /// Parses and checks the annotated item; every mistake is reported, each at its tokens.
    /// `example` is the attribute as it is usually written, e.g. `#[event("chat")]`.
    pub(crate) fn parse(item: TokenStream, attribute: &str, example: &str) -> syn::Result<Self> {
        let item = match syn::parse2::<Item>(item)? {
            Item::Fn(f) => f,
            other => {
                return Err(syn::Error::new(
                    first_token_span(&other),
                    format!(
                        "{attribute} goes on an `async fn`, e.g. `{example} async fn name(socket: Socket) {{ .. }}`"
                    ),
                ))
            }
        };
        let mut errors = Errors::default();
        let sig = &item.sig;
        let name = &sig.ident;
        let what = format!("{attribute} functions");

        if let Some(other) = item.attrs.iter().find(|a| is_handler_attribute(a)) {
            errors.push(syn::Error::new(
                other.span(),
                format!("a function takes one `#[event]` or `#[middleware]` attribute; to register `{name}` twice, call `App::event` / `App::middleware` by hand"),
            ));
        }
        if let Some(c) = &sig.constness {
            errors.push(syn::Error::new(c.span, format!("{what} cannot be `const`")));
        }
        if let Some(u) = &sig.unsafety {
            errors.push(syn::Error::new(
                u.span,
                format!(
                    "{what} cannot be `unsafe`: the runtime calls them like any other function"
                ),
            ));
        }
        if let Some(abi) = &sig.abi {
            errors.push(syn::Error::new_spanned(
                abi,
                format!("{what} cannot have an ABI: remove `{}`", compact(abi)),
            ));
        }
        if sig.asyncness.is_none() {
            errors.push(syn::Error::new(
                sig.fn_token.span,
                format!("{what} must be `async`: write `async fn {name}(..)`"),
            ));
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.push(syn::Error::new_spanned(
                &sig.generics,
                format!(
                    "{what} cannot be generic: each argument's type must be known to extract it; use concrete types, or register an instance by hand: `App::event(\"name\", {name}::<T>)`"
                ),
            ));
        }
        if let Some(v) = &sig.variadic {
            errors.push(syn::Error::new(
                v.span(),
                format!("{what} cannot be variadic"),
            ));
        }

        let mut args = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(r) => errors.push(syn::Error::new_spanned(
                    r,
                    format!(
                        "{what} cannot take `self`: write a free `async fn` (outside any `impl`); shared data goes in `State<T>`"
                    ),
                )),
                FnArg::Typed(pat) => {
                    if let Some(span) = find_impl(pat.ty.to_token_stream()) {
                        errors.push(syn::Error::new(
                            span,
                            "an argument cannot be `impl Trait`: name the extractor's type, e.g. `Json<ChatMsg>`",
                        ));
                    }
                    args.push((*pat.ty).clone());
                }
            }
        }
        check_payload_order(&args, &mut errors);

        let output_span = match &sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => name.span(),
        };
        errors.finish()?;
        Ok(Self {
            cfgs: cfg_attributes(&item.attrs),
            item,
            args,
            output_span,
        })
    }

    /// The function, the hidden struct and its `Handler` and `Register` impls. `register` is
    /// the body of `Register::register`, an expression over `__sc_app` (the app so far) and
    /// `__sc_handler` (the generated handler) and `__sc_source` (the function's location).
    pub(crate) fn generate(&self, flavor: &Flavor, register: TokenStream) -> TokenStream {
        let item = &self.item;
        let ident = &item.sig.ident;
        let vis = &item.vis;
        let cfgs = &self.cfgs;
        let output = &flavor.output;
        let private = quote!(::sc_core::__private);

        let checks = self.args.iter().filter_map(|ty| {
            let name = last_segment(ty)?;
            flavor.unavailable.contains(&name.as_str()).then(|| {
                let usable = Ident::new(&flavor.usable.to_string(), ty.span());
                quote_spanned!(ty.span()=> let () = <#ty as ::sc_core::__private::#usable>::OK;)
            })
        });

        let names: Vec<Ident> = (0..self.args.len())
            .map(|i| format_ident!("__sc_arg{}", i))
            .collect();
        // Each extraction is spanned at its argument's type, so an argument that is not an
        // extractor is one error there.
        let extract = self
            .args
            .iter()
            .zip(&names)
            .enumerate()
            .map(|(i, (ty, name))| {
                let value = if i + 1 < self.args.len() {
                    quote_spanned!(ty.span()=>
                        <#ty as ::sc_core::__private::FromRequestParts>::from_request_parts(
                            ::sc_core::__private::Request::parts(&__sc_req)
                        ).await?
                    )
                } else {
                    quote_spanned!(ty.span()=>
                        <#ty as ::sc_core::__private::FromRequest<_>>::from_request(__sc_req).await?
                    )
                };
                quote!(let #name = #value;)
            });
        let convert = respan(flavor.convert.clone(), self.output_span);
        let value = Ident::new("__sc_value", Span::call_site());
        let converted = quote_spanned!(self.output_span=> #convert(__sc_value));
        let boxed = quote_spanned!(ident.span()=> ::std::boxed::Box::pin(__sc_future));
        let source = source(ident);

        quote! {
            #item

            #(#cfgs)*
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            #[derive(::core::clone::Clone, ::core::marker::Copy)]
            #vis struct #ident {}

            #(#cfgs)*
            const _: () = {
                impl #private::Handler<#private::Generated> for #ident {
                    type Output = #output;

                    #[allow(unused_variables)]
                    fn call(
                        &self,
                        __sc_req: #private::Request,
                    ) -> #private::BoxFuture<'static, ::core::result::Result<#output, #private::ScError>> {
                        #(#checks)*
                        let __sc_future = async move {
                            #(#extract)*
                            let #value = #ident(#(#names),*).await;
                            ::core::result::Result::Ok::<#output, #private::ScError>(#converted)
                        };
                        #boxed
                    }
                }

                impl #private::Register for #ident {
                    fn register(__sc_app: #private::App) -> #private::App {
                        let __sc_handler = #ident {};
                        let __sc_source = #source;
                        #register
                    }
                }
            };
        }
    }
}

/// The same tokens, all with `span` (so rustc reports a failed bound on them there).
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

/// `Source { name, module, file, line }` for an item named `ident`.
pub(crate) fn source(ident: &Ident) -> TokenStream {
    let name = ident.to_string();
    let name = name.strip_prefix("r#").unwrap_or(&name);
    let location = quote_spanned!(ident.span()=> file: ::core::file!(), line: ::core::line!(),);
    quote! {
        ::sc_core::__private::Source {
            name: ::core::option::Option::Some(#name),
            module: ::core::option::Option::Some(::core::module_path!()),
            #location
        }
    }
}

/// At most one payload extractor, and it comes last. One error per mistake, at the argument.
fn check_payload_order(args: &[Type], errors: &mut Errors) {
    let payloads: Vec<(usize, &Type)> = args
        .iter()
        .enumerate()
        .filter(|(_, ty)| {
            last_segment(ty).is_some_and(|n| PAYLOAD_EXTRACTORS.contains(&n.as_str()))
        })
        .collect();
    match payloads.as_slice() {
        [] => {}
        [(i, _)] if i + 1 == args.len() => {}
        [(_, ty)] => {
            let last = args.last().map(compact).unwrap_or_default();
            errors.push(syn::Error::new_spanned(
                ty,
                format!(
                    "the payload extractor `{}` must be the last argument: move it after `{last}`",
                    compact(ty)
                ),
            ));
        }
        [(_, first), rest @ ..] => {
            let others: Vec<String> = rest
                .iter()
                .map(|(_, t)| format!("`{}`", compact(t)))
                .collect();
            errors.push(syn::Error::new_spanned(
                first,
                format!(
                    "only one payload extractor per function: `{}` and {} both read the payload; keep one (`Raw` gives the payload as JSON, `TryJson<T>` lets you handle a bad payload)",
                    compact(first),
                    others.join(" and ")
                ),
            ));
        }
    }
}

fn first_token_span(item: &Item) -> Span {
    item.to_token_stream()
        .into_iter()
        .find(|tt| !matches!(tt, TokenTree::Punct(p) if p.as_char() == '#'))
        .map_or_else(Span::call_site, |tt| tt.span())
}

/// What to emit when the macro failed: the item as written, so the rest of the crate still
/// compiles against it, plus, for a free function, the hidden struct with a `Register` impl
/// that does nothing, so `handlers![name]` does not add a second error. Compilation fails anyway
/// with the macro's errors.
pub(crate) fn fallback(item: TokenStream) -> TokenStream {
    let Ok(f) = syn::parse2::<ItemFn>(item.clone()) else {
        return item;
    };
    let has_receiver = f.sig.receiver().is_some();
    let another = f.attrs.iter().any(is_handler_attribute);
    if has_receiver || another {
        return item;
    }
    let ident = &f.sig.ident;
    let vis = &f.vis;
    let cfgs = cfg_attributes(&f.attrs);
    quote! {
        #item

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #ident {}

        #(#cfgs)*
        const _: () = {
            impl ::sc_core::__private::Register for #ident {
                fn register(__sc_app: ::sc_core::__private::App) -> ::sc_core::__private::App {
                    __sc_app
                }
            }
        };
    }
}
