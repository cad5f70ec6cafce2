//! Result tables: one per scenario, printed as Markdown so they paste into
//! `docs/PERFORMANCE.md` unchanged.

use std::fmt;

/// Whether a row met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The target was met.
    Pass,
    /// The target was missed.
    Miss,
    /// The row has no target (context only).
    Info,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Miss => "MISS",
            Self::Info => "",
        })
    }
}

impl Verdict {
    /// `Pass` when `ok`, else `Miss`.
    pub fn from_bool(ok: bool) -> Self {
        if ok { Self::Pass } else { Self::Miss }
    }
}

/// One measured figure with its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The measured value, formatted with its unit.
    pub value: String,
    /// The raw baseline measured in the same run, formatted.
    pub baseline: String,
    /// value / baseline (or the ratio that the target is about), formatted.
    pub ratio: String,
    /// The target, formatted.
    pub target: String,
    /// Whether the target was met.
    pub verdict: Verdict,
}

impl Row {
    /// A row without baseline, ratio or target.
    pub fn info(metric: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            value: value.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    /// A row with every column.
    pub fn new(
        metric: impl Into<String>,
        value: impl Into<String>,
        baseline: impl Into<String>,
        ratio: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) -> Self {
        Self {
            metric: metric.into(),
            value: value.into(),
            baseline: baseline.into(),
            ratio: ratio.into(),
            target: target.into(),
            verdict,
        }
    }
}

/// The result table of one scenario.
#[derive(Debug, Clone)]
pub struct Table {
    /// Scenario title.
    pub title: String,
    /// The rows, in print order.
    pub rows: Vec<Row>,
    /// Free-form notes printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, row: Row) -> &mut Self {
        self.rows.push(row);
        self
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    /// Number of rows that missed their target.
    pub fn misses(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.verdict == Verdict::Miss)
            .count()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEAD: [&str; 6] = ["metric", "value", "baseline", "ratio", "target", "result"];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.metric.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.ratio.clone(),
                    r.target.clone(),
                    r.verdict.to_string(),
                ]
            })
            .collect();
        let mut width = HEAD.map(str::len);
        for c in &cells {
            for (w, s) in width.iter_mut().zip(c.iter()) {
                *w = (*w).max(s.chars().count());
            }
        }
        writeln!(f, "### {}", self.title)?;
        writeln!(f)?;
        let line = |f: &mut fmt::Formatter<'_>, c: &[String; 6]| -> fmt::Result {
            write!(f, "|")?;
            for (s, w) in c.iter().zip(width) {
                write!(f, " {s:<w$} |")?;
            }
            writeln!(f)
        };
        line(f, &HEAD.map(str::to_owned))?;
        line(f, &width.map(|w| "-".repeat(w)))?;
        for c in &cells {
            line(f, c)?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            for n in &self.notes {
                writeln!(f, "- {n}")?;
            }
        }
        Ok(())
    }
}
