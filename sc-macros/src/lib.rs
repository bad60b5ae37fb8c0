//! sc-macros: the declarative layer over sc-core's handler API (`#[event]`, `#[middleware]`,
//! `#[channel]`, `handlers![]`). Not built yet: see the macros issue. Users depend on `sc-core`,
//! which re-exports these macros.
