//! What people read: the status page (HTML). Pure: rows and time in, text out.

pub mod page;
