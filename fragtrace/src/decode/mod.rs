//! From raw kernel records to typed, named events: gfp flags, migratetypes, symbols.
pub mod cexpr;
pub mod event;
pub mod gfp;
pub mod kallsyms;
pub mod migratetype;
pub mod print_fmt;
pub mod stack;
pub mod tracefs;
