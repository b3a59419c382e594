//! Attribute arguments: `key = value` pairs, each key once, unknown keys rejected with the
//! list of valid ones (lookahead errors name them).

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitInt, LitStr, Token};

pub mod kw {
    syn::custom_keyword!(topic);
    syn::custom_keyword!(partitions);
    syn::custom_keyword!(replication);
    syn::custom_keyword!(retention);
    syn::custom_keyword!(cleanup_policy);
    syn::custom_keyword!(compression);
    syn::custom_keyword!(key);
    syn::custom_keyword!(version);
    syn::custom_keyword!(group);
    syn::custom_keyword!(name);
    syn::custom_keyword!(format);
    syn::custom_keyword!(retries);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(all);
    syn::custom_keyword!(topics);
    syn::custom_keyword!(batch);
    syn::custom_keyword!(max_size);
    syn::custom_keyword!(max_wait);
    syn::custom_keyword!(ordering);
    syn::custom_keyword!(concurrency);
    syn::custom_keyword!(idempotent);
    syn::custom_keyword!(layer);
}

fn set_once<T>(slot: &mut Option<T>, key: &str, key_span: Span, value: T) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(key_span, format!("duplicate `{key}` argument")));
    }
    *slot = Some(value);
    Ok(())
}

/// "unknown argument `topc`; did you mean `topic`?", spanned on the word.
pub fn unknown_argument(word: &Ident, valid: &[&str]) -> syn::Error {
    let text = word.to_string();
    let closest = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(&text, v), *v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let message = match closest {
        Some((_, v)) => format!("unknown argument `{text}`; did you mean `{v}`? (valid: {})", valid.join(", ")),
        None => format!("unknown argument `{text}` (valid: {})", valid.join(", ")),
    };
    syn::Error::new(word.span(), message)
}

/// The error for an argument no branch took: the word itself when it is one.
fn unexpected(input: ParseStream<'_>, lookahead: syn::parse::Lookahead1<'_>, valid: &[&str]) -> syn::Error {
    use syn::ext::IdentExt;
    match input.fork().call(Ident::parse_any) {
        Ok(word) => unknown_argument(&word, valid),
        Err(_) => lookahead.error(),
    }
}

const EVENT_ARGS: &[&str] =
    &["topic", "key", "version", "type", "format", "partitions", "replication", "retention", "cleanup_policy", "compression", "crate"];
const HANDLER_ARGS: &[&str] =
    &["group", "name", "retries", "backoff", "all", "topics", "batch", "max_size", "max_wait", "ordering", "concurrency", "idempotent", "layer", "crate"];

/// Parses `= value` after a key.
fn value<T: Parse>(input: ParseStream<'_>) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

/// Arguments of `#[integration_event(...)]`.
#[derive(Default)]
pub struct EventArgs {
    pub topic: Option<LitStr>,
    pub key: Option<Ident>,
    pub version: Option<LitInt>,
    pub event_type: Option<LitStr>,
    pub format: Option<LitStr>,
    pub partitions: Option<LitInt>,
    pub replication: Option<LitInt>,
    pub retention: Option<LitStr>,
    pub cleanup_policy: Option<LitStr>,
    pub compression: Option<LitStr>,
    pub krate: Option<LitStr>,
}

impl Parse for EventArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = EventArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::topic) {
                let k: kw::topic = input.parse()?;
                set_once(&mut args.topic, "topic", k.span, value(input)?)?;
            } else if lookahead.peek(kw::key) {
                let k: kw::key = input.parse()?;
                set_once(&mut args.key, "key", k.span, value(input)?)?;
            } else if lookahead.peek(kw::version) {
                let k: kw::version = input.parse()?;
                set_once(&mut args.version, "version", k.span, value(input)?)?;
            } else if lookahead.peek(Token![type]) {
                let k: Token![type] = input.parse()?;
                set_once(&mut args.event_type, "type", k.span, value(input)?)?;
            } else if lookahead.peek(kw::format) {
                let k: kw::format = input.parse()?;
                set_once(&mut args.format, "format", k.span, value(input)?)?;
            } else if lookahead.peek(kw::partitions) {
                let k: kw::partitions = input.parse()?;
                set_once(&mut args.partitions, "partitions", k.span, value(input)?)?;
            } else if lookahead.peek(kw::replication) {
                let k: kw::replication = input.parse()?;
                set_once(&mut args.replication, "replication", k.span, value(input)?)?;
            } else if lookahead.peek(kw::retention) {
                let k: kw::retention = input.parse()?;
                set_once(&mut args.retention, "retention", k.span, value(input)?)?;
            } else if lookahead.peek(kw::cleanup_policy) {
                let k: kw::cleanup_policy = input.parse()?;
                set_once(&mut args.cleanup_policy, "cleanup_policy", k.span, value(input)?)?;
            } else if lookahead.peek(kw::compression) {
                let k: kw::compression = input.parse()?;
                set_once(&mut args.compression, "compression", k.span, value(input)?)?;
            } else if lookahead.peek(Token![crate]) {
                let k: Token![crate] = input.parse()?;
                set_once(&mut args.krate, "crate", k.span, value(input)?)?;
            } else {
                return Err(unexpected(input, lookahead, EVENT_ARGS));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Arguments of `#[handler(...)]`.
#[derive(Default)]
pub struct HandlerArgs {
    pub group: Option<LitStr>,
    pub name: Option<LitStr>,
    pub retries: Option<LitInt>,
    pub backoff: Option<LitStr>,
    pub all: Option<Span>,
    pub topics: Option<(Span, Vec<LitStr>)>,
    pub batch: Option<Span>,
    pub max_size: Option<LitInt>,
    pub max_wait: Option<LitStr>,
    pub ordering: Option<LitStr>,
    pub concurrency: Option<LitInt>,
    pub idempotent: Option<Span>,
    /// `layer = expr`, each an expression giving an `eventkit::layer::HandleLayer`; repeatable,
    /// the first the outermost.
    pub layers: Vec<syn::Expr>,
    pub krate: Option<LitStr>,
}

impl Parse for HandlerArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = HandlerArgs::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::group) {
                let k: kw::group = input.parse()?;
                set_once(&mut args.group, "group", k.span, value(input)?)?;
            } else if lookahead.peek(kw::name) {
                let k: kw::name = input.parse()?;
                set_once(&mut args.name, "name", k.span, value(input)?)?;
            } else if lookahead.peek(kw::retries) {
                let k: kw::retries = input.parse()?;
                set_once(&mut args.retries, "retries", k.span, value(input)?)?;
            } else if lookahead.peek(kw::backoff) {
                let k: kw::backoff = input.parse()?;
                set_once(&mut args.backoff, "backoff", k.span, value(input)?)?;
            } else if lookahead.peek(kw::all) {
                let k: kw::all = input.parse()?;
                set_once(&mut args.all, "all", k.span, k.span)?;
            } else if lookahead.peek(kw::idempotent) {
                let k: kw::idempotent = input.parse()?;
                set_once(&mut args.idempotent, "idempotent", k.span, k.span)?;
            } else if lookahead.peek(kw::layer) {
                input.parse::<kw::layer>()?;
                args.layers.push(value(input)?);
            } else if lookahead.peek(kw::batch) {
                let k: kw::batch = input.parse()?;
                set_once(&mut args.batch, "batch", k.span, k.span)?;
            } else if lookahead.peek(kw::topics) {
                let k: kw::topics = input.parse()?;
                input.parse::<Token![=]>()?;
                let content;
                syn::bracketed!(content in input);
                let list = content.parse_terminated(|p| p.parse::<LitStr>(), Token![,])?;
                set_once(&mut args.topics, "topics", k.span, (k.span, list.into_iter().collect()))?;
            } else if lookahead.peek(kw::max_size) {
                let k: kw::max_size = input.parse()?;
                set_once(&mut args.max_size, "max_size", k.span, value(input)?)?;
            } else if lookahead.peek(kw::max_wait) {
                let k: kw::max_wait = input.parse()?;
                set_once(&mut args.max_wait, "max_wait", k.span, value(input)?)?;
            } else if lookahead.peek(kw::ordering) {
                let k: kw::ordering = input.parse()?;
                set_once(&mut args.ordering, "ordering", k.span, value(input)?)?;
            } else if lookahead.peek(kw::concurrency) {
                let k: kw::concurrency = input.parse()?;
                set_once(&mut args.concurrency, "concurrency", k.span, value(input)?)?;
            } else if lookahead.peek(Token![crate]) {
                let k: Token![crate] = input.parse()?;
                set_once(&mut args.krate, "crate", k.span, value(input)?)?;
            } else {
                return Err(unexpected(input, lookahead, HANDLER_ARGS));
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Parses attribute arguments; on an error, records it and goes on with the defaults, so that
/// the item and its other errors still come out.
pub fn parse_or_default<T: Parse + Default>(args: proc_macro2::TokenStream, errors: &mut Errors) -> T {
    syn::parse2::<T>(args).unwrap_or_else(|e| {
        errors.push(e);
        T::default()
    })
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(e) => e.combine(error),
            None => self.0 = Some(error),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
    pub fn to_compile_error(&self) -> proc_macro2::TokenStream {
        self.0.as_ref().map(syn::Error::to_compile_error).unwrap_or_default()
    }
}
