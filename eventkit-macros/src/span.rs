//! Errors rustc reports in generated code, spanned over a whole type or path of the user's.
//!
//! A stable proc macro cannot join spans, but rustc spans an expression from its first token to
//! its last: generated code whose first token carries the first token's span of what the user
//! wrote, and whose last token (a group) the last one's, is underlined over all of it.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{quote_spanned, ToTokens};

/// The spans of the first and the last token of `tokens`.
fn ends(tokens: &impl ToTokens) -> (Span, Span) {
    let mut tokens = tokens.to_token_stream().into_iter();
    let first = tokens.next().map_or_else(Span::call_site, |t| t.span());
    let last = tokens.last().map_or(first, |t| match t {
        TokenTree::Group(g) => g.span_close(),
        t => t.span(),
    });
    (first, last)
}

/// `path(args)` (a function call or a macro invocation: `path` ends in `!`) spanned over `over`.
pub fn call_over(over: &impl ToTokens, path: TokenStream, args: TokenStream) -> TokenStream {
    let (first, last) = ends(over);
    let path: TokenStream = path
        .into_iter()
        .map(|mut t| {
            t.set_span(first);
            t
        })
        .collect();
    let mut args = Group::new(Delimiter::Parenthesis, args);
    args.set_span(last);
    quote_spanned!(first=> #path #args)
}
