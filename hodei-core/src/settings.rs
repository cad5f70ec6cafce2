//! The environment settings of a binary as data: each configuration reader
//! publishes a table of the variables it reads, `--help` prints the tables,
//! and a test checks that a reader reads nothing its table does not list.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// One environment variable a configuration reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// What an unset (or blank) variable means.
    pub default: &'static str,
    /// What it sets.
    pub meaning: &'static str,
}

impl Setting {
    /// A setting.
    #[must_use]
    pub const fn new(name: &'static str, default: &'static str, meaning: &'static str) -> Self {
        Self {
            name,
            default,
            meaning,
        }
    }
}

/// Settings under a heading (`Server`, `Docker provider`, …).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SettingGroup {
    /// The heading.
    pub title: &'static str,
    /// Its settings.
    pub settings: &'static [Setting],
}

impl SettingGroup {
    /// A group.
    #[must_use]
    pub const fn new(title: &'static str, settings: &'static [Setting]) -> Self {
        Self { title, settings }
    }
}

/// The groups as the text a `--help` ends with: one line per variable with
/// its default, its meaning indented below.
#[must_use]
pub fn render_help(groups: &[SettingGroup]) -> String {
    let mut out = String::from("Environment (every setting; unset or blank = the default):\n");
    for g in groups {
        let _ = writeln!(out, "\n{}:", g.title);
        for s in g.settings {
            let _ = writeln!(
                out,
                "  {} [default: {}]\n      {}",
                s.name, s.default, s.meaning
            );
        }
    }
    out
}

/// The variables `read` asks its lookup for (every lookup answers "unset"):
/// how a test checks a configuration reader against its [`Setting`] table.
pub fn variables_read<T>(
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) -> BTreeSet<String> {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        None
    };
    let _ = read(&lookup);
    asked.into_inner()
}

/// The variables `read` asks for that `table` does not list (empty = the
/// table is complete for what an empty environment makes it read).
#[must_use]
pub fn unlisted<T>(
    table: &[Setting],
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) -> Vec<String> {
    variables_read(read)
        .into_iter()
        .filter(|v| !table.iter().any(|s| s.name == v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[Setting] = &[Setting::new("A", "1", "the a")];

    #[test]
    fn a_reader_asking_for_an_unlisted_variable_is_caught() {
        let read = |get: &dyn Fn(&str) -> Option<String>| (get("A"), get("B"));
        assert_eq!(unlisted(TABLE, read), vec!["B".to_owned()]);
    }

    #[test]
    fn help_lists_each_variable_with_its_default() {
        let text = render_help(&[SettingGroup::new("Test", TABLE)]);
        assert!(
            text.contains("Test:\n  A [default: 1]\n      the a\n"),
            "{text}"
        );
    }
}
