//! Column-aligned output like Go's tabwriter, as `ctr` prints.

/// Renders rows with columns padded to their widest cell, separated by
/// `padding` spaces (the last column is not padded).
pub(crate) fn render(rows: &[Vec<String>], padding: usize) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i] - cell.chars().count() + padding;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let rows = vec![
            vec!["NAME".to_string(), "LABELS".to_string()],
            vec!["default".to_string(), "".to_string()],
            vec!["x".to_string(), "k=v".to_string()],
        ];
        assert_eq!(
            super::render(&rows, 4),
            "NAME       LABELS\ndefault\nx          k=v\n"
        );
    }
}
