//! Procedural macros of eventkit (the `eventkit-kafka` package). Use them through it, as
//! `eventkit::integration_event`, `eventkit::handler`, `eventkit::maps_to` and
//! `eventkit::command`: their documentation, with every argument, is there.

#![warn(missing_docs)]

extern crate proc_macro;

mod attr;
mod command;
mod event;
mod handler;
mod krate;
mod maps_to;
mod span;

use proc_macro::TokenStream;

/// (The procedural macro behind `eventkit::integration_event`, whose documentation lists every argument,
/// from the `eventkit-kafka-macros` package.)
#[proc_macro_attribute]
pub fn integration_event(args: TokenStream, item: TokenStream) -> TokenStream {
    event::expand(args.into(), item.into()).into()
}

/// (The procedural macro behind `eventkit::handler`, whose documentation lists every argument,
/// from the `eventkit-kafka-macros` package.)
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::expand(args.into(), item.into()).into()
}

/// (The procedural macro behind `eventkit::maps_to`, whose documentation lists every argument,
/// from the `eventkit-kafka-macros` package.)
#[proc_macro_attribute]
pub fn maps_to(args: TokenStream, item: TokenStream) -> TokenStream {
    maps_to::expand(args.into(), item.into()).into()
}

/// (The procedural macro behind `eventkit::command`, whose documentation lists every argument,
/// from the `eventkit-kafka-macros` package.)
#[proc_macro_attribute]
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    command::expand(args.into(), item.into()).into()
}
