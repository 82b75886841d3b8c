//! What people read: HTML pages. Pure: rows and time in, text out. [`layout`] holds the pieces
//! every page is built from (shell, pills, cards, sparkline); [`page`] is `health`'s status page.

pub mod console;
pub mod layout;
pub mod page;
