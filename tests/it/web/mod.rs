//! The web pages: status codes, access rules, CSRF and escaping in-process (`pages`), and
//! the pages driven in headless Chromium against a running `catchd run` (`browser`).

mod browser;
mod pages;
pub mod webdriver;
