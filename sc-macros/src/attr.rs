//! Attribute arguments, parsed generically: positional values first (`"chat"`, `subscribe`), then
//! `key = value` options. Each macro then takes what it knows from an [`Args`] with [`Args::take`]
//! and reports the rest with [`Args::finish`], so unknown and duplicate options get the same
//! errors (spanned at the key, listing the valid options) in every macro.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, Ident, Token, Type};

/// Collects errors so a macro reports every mistake at once (`syn::Error::combine`).
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Adds `Err`'s error; returns the `Ok` value.
    pub(crate) fn ok<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// `Err` with every error, if any.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// An option's value: a type when it parses as one (`message = Vec<Msg>`), else an expression
/// (`ack_timeout = 5000`).
pub(crate) enum Value {
    Type(Type),
    Expr(Expr),
}

impl ToTokens for Value {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        match self {
            Value::Type(t) => t.to_tokens(tokens),
            Value::Expr(e) => e.to_tokens(tokens),
        }
    }
}

/// One `key = value` option.
pub(crate) struct NamedArg {
    /// The key as written.
    pub key: Ident,
    /// The value.
    pub value: Value,
}

/// The arguments of an attribute, in order.
pub(crate) struct Args {
    /// Values before the first option: `"chat"` in `#[event("chat")]`.
    pub positional: Vec<Expr>,
    /// `key = value` options not taken yet.
    pub named: Vec<NamedArg>,
    /// Positional values written after an option, with that option's key (reported by `finish`).
    late: Vec<(Expr, Ident)>,
}

fn parse_value(input: ParseStream) -> syn::Result<Value> {
    let fork = input.fork();
    if fork.parse::<Type>().is_ok() && (fork.is_empty() || fork.peek(Token![,])) {
        return Ok(Value::Type(input.parse()?));
    }
    Ok(Value::Expr(input.parse()?))
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut args = Args {
            positional: Vec::new(),
            named: Vec::new(),
            late: Vec::new(),
        };
        while !input.is_empty() {
            if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
                let key: Ident = input.parse()?;
                input.parse::<Token![=]>()?;
                let value = parse_value(input)?;
                args.named.push(NamedArg { key, value });
            } else {
                let value: Expr = input.parse()?;
                if let Some(first) = args.named.first() {
                    args.late.push((value, first.key.clone()));
                } else {
                    args.positional.push(value);
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

/// What a macro accepts, for error messages.
pub(crate) struct Spec {
    /// `event`, `middleware`, `channel`.
    pub macro_name: &'static str,
    /// Valid option keys.
    pub options: &'static [&'static str],
    /// A complete example, e.g. `#[event("chat")]`.
    pub example: &'static str,
}

impl Spec {
    fn valid_list(&self) -> String {
        match self.options {
            [] => format!(
                "`#[{}]` takes no options: write `{}`",
                self.macro_name, self.example
            ),
            [one] => format!("the only option is `{one}`, e.g. `{}`", self.example),
            many => format!(
                "expected one of {}",
                many.iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

impl Args {
    /// Parses attribute arguments.
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Self> {
        syn::parse2(tokens)
    }

    /// Removes option `key` and returns its value; a second `key` is a "duplicate option" error.
    pub(crate) fn take(&mut self, key: &str, errors: &mut Errors) -> Option<NamedArg> {
        let mut found = None;
        let mut rest = Vec::with_capacity(self.named.len());
        for arg in self.named.drain(..) {
            if arg.key != key {
                rest.push(arg);
            } else if found.is_some() {
                errors.push(syn::Error::new(
                    arg.key.span(),
                    format!("duplicate option `{key}`: give it once"),
                ));
            } else {
                found = Some(arg);
            }
        }
        self.named = rest;
        found
    }

    /// Removes the bare word `word` (a flag such as `presence`), wherever it was written among
    /// the values; its span when it was there. A second one is a "duplicate flag" error.
    pub(crate) fn take_flag(
        &mut self,
        word: &str,
        errors: &mut Errors,
    ) -> Option<proc_macro2::Span> {
        let is_word =
            |e: &Expr| matches!(e, Expr::Path(p) if p.qself.is_none() && p.path.is_ident(word));
        let mut found: Option<proc_macro2::Span> = None;
        let mut seen = |span: proc_macro2::Span, errors: &mut Errors| {
            if found.is_some() {
                errors.push(syn::Error::new(
                    span,
                    format!("duplicate flag `{word}`: give it once"),
                ));
            } else {
                found = Some(span);
            }
        };
        let positional = std::mem::take(&mut self.positional);
        for value in positional {
            if is_word(&value) {
                seen(value.span(), errors);
            } else {
                self.positional.push(value);
            }
        }
        let late = std::mem::take(&mut self.late);
        for (value, key) in late {
            if is_word(&value) {
                seen(value.span(), errors);
            } else {
                self.late.push((value, key));
            }
        }
        found
    }

    /// Reports options nobody took (unknown options, with a suggestion) and values out of place.
    /// Returns whether there were unknown options (a missing required option is then most
    /// likely the misspelled one: no need for a second error).
    pub(crate) fn finish(self, spec: &Spec, errors: &mut Errors) -> bool {
        let unknown = !self.named.is_empty();
        for (value, key) in self.late {
            errors.push(syn::Error::new(
                value.span(),
                format!(
                    "`{}` must come before the option `{key}`: write `{}`",
                    compact(&value),
                    spec.example
                ),
            ));
        }
        let mut seen: Vec<String> = Vec::new();
        for arg in self.named {
            let key = arg.key.to_string();
            if seen.contains(&key) {
                continue; // reported once, as unknown
            }
            let hint = did_you_mean(&key, spec.options)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            errors.push(syn::Error::new(
                arg.key.span(),
                format!(
                    "unknown option `{key}` for `#[{}]`: {hint}{}",
                    spec.macro_name,
                    spec.valid_list()
                ),
            ));
            seen.push(key);
        }
        unknown
    }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Source text of some tokens, for messages (`Json < T >` becomes `Json<T>`).
pub(crate) fn compact(tokens: &impl ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1).copied();
            if matches!(prev, Some('<' | '(' | '[' | '&' | ':'))
                || matches!(next, Some('<' | '>' | ')' | ']' | ',' | ':'))
            {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_positional_then_named() {
        let args = Args::parse(quote!("rooms/{id}", message = Vec<Msg>, n = 5)).expect("parse");
        assert_eq!(args.positional.len(), 1);
        let keys: Vec<String> = args.named.iter().map(|a| a.key.to_string()).collect();
        assert_eq!(keys, ["message", "n"]);
        assert!(matches!(args.named[0].value, Value::Type(_)));
        assert!(matches!(args.named[1].value, Value::Expr(_)));
    }

    #[test]
    fn reports_duplicate_and_unknown_options() {
        let spec = Spec {
            macro_name: "channel",
            options: &["message"],
            example: "#[channel(\"a/{b}\", message = M)]",
        };
        let mut args =
            Args::parse(quote!("a", message = A, message = B, mesage = C)).expect("parse");
        let mut errors = Errors::default();
        assert!(args.take("message", &mut errors).is_some());
        assert!(args.finish(&spec, &mut errors), "an unknown option");
        let all: Vec<String> = errors
            .finish()
            .expect_err("errors")
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(all[0], "duplicate option `message`: give it once");
        assert!(
            all[1].starts_with("unknown option `mesage` for `#[channel]`: did you mean `message`?"),
            "{}",
            all[1]
        );
    }

    #[test]
    fn suggests_close_names_only() {
        let kinds = ["subscribe", "publish_in", "handshake"];
        assert_eq!(did_you_mean("subscibe", &kinds), Some("subscribe"));
        assert_eq!(did_you_mean("Subscribe", &kinds), Some("subscribe"));
        assert_eq!(did_you_mean("connect", &kinds), None);
    }

    #[test]
    fn compacts_token_text() {
        assert_eq!(compact(&quote!(Json<Vec<u8>>)), "Json<Vec<u8>>");
        assert_eq!(compact(&quote!(std::rc::Rc<u8>)), "std::rc::Rc<u8>");
        assert_eq!(compact(&quote!(State<(A, B)>)), "State<(A, B)>");
        assert_eq!(compact(&quote!(&'static str)), "&'static str");
    }
}
