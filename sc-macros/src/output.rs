//! What every macro emits at the end: the expansion, or on error the `compile_error!`s plus a
//! fallback (the item as written), and with `SC_MACROS_DEBUG=1` a copy on stderr.

use proc_macro2::TokenStream;
use quote::quote;

/// Whether `SC_MACROS_DEBUG` asks for expansions on stderr (set and not `0`). Cargo does not
/// rebuild when it changes: touch the file or `cargo clean -p` the crate to see expansions again.
fn debug() -> bool {
    std::env::var_os("SC_MACROS_DEBUG").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Turns a macro's result into its output; `on_error` receives the errors as `compile_error!`s.
pub(crate) fn finish(
    macro_name: &str,
    result: syn::Result<TokenStream>,
    on_error: impl FnOnce(TokenStream) -> TokenStream,
) -> proc_macro::TokenStream {
    let tokens = match result {
        Ok(tokens) => tokens,
        Err(e) => on_error(e.to_compile_error()),
    };
    if debug() {
        eprintln!("sc-macros: {macro_name} expands to:\n{tokens}\n");
    }
    tokens.into()
}

/// The errors followed by the item (for attributes).
pub(crate) fn with_item(errors: TokenStream, item: TokenStream) -> TokenStream {
    quote!(#errors #item)
}
