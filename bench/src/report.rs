//! Percentiles and the Markdown results tables.

pub fn percentile_sorted(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64
}

/// p50, p99 and max of µs samples, in milliseconds.
pub fn summary_ms(samples: &mut [u32]) -> (f64, f64, f64) {
    samples.sort_unstable();
    let ms = |v: f64| v / 1000.0;
    (
        ms(percentile_sorted(samples, 50.0)),
        ms(percentile_sorted(samples, 99.0)),
        ms(samples.last().copied().map_or(f64::NAN, f64::from)),
    )
}

pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Self {
            title: title.into(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn print(&self) {
        println!("\n### {}\n", self.title);
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                    .chain([self.headers[i].chars().count()])
                    .max()
                    .unwrap_or(3)
                    .max(3)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = widths
                .iter()
                .enumerate()
                .map(|(i, w)| format!("{:<w$}", cells.get(i).map_or("", String::as_str)))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&self.headers);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            line(r);
        }
        for n in &self.notes {
            println!("\n{n}");
        }
    }
}

pub fn f0(v: f64) -> String {
    if v.is_finite() { format!("{v:.0}") } else { "-".into() }
}

pub fn f1(v: f64) -> String {
    if v.is_finite() { format!("{v:.1}") } else { "-".into() }
}

pub fn f2(v: f64) -> String {
    if v.is_finite() { format!("{v:.2}") } else { "-".into() }
}
