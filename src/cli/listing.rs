//! `--format` of the commands that list things (`kiln images`, `kiln ps`): docker's
//! templates applied to each row.
//!
//! Exists so that scripts written for docker (`docker images --format
//! '{{.Repository}}:{{.Tag}}'`, `docker ps --format 'table {{.Names}}\t{{.Status}}'`) work
//! with kiln unchanged: the same field names, `table` for a header and aligned columns,
//! `\t` and `\n` written as two characters, `{{json .}}` for a whole row.

use serde_json::{Map, Value};

use super::output::print_table;
use super::template::render_row;
use super::{CmdResult, Failure};

/// One field of a listing's rows: its template name and its table header.
pub struct Column {
    field: &'static str,
    header: &'static str,
}

/// The column `{{.FIELD}}` with the header `HEADER`.
pub const fn column(field: &'static str, header: &'static str) -> Column {
    Column { field, header }
}

/// Prints `rows` (objects with one string per column) through `format`.
pub fn print(format: &str, columns: &[Column], rows: &[Map<String, Value>]) -> CmdResult {
    let format = format.replace("\\t", "\t").replace("\\n", "\n");
    let (table, template) = match format.strip_prefix("table") {
        Some(rest) if rest.trim().is_empty() => (true, default_template(columns)),
        Some(rest) => (true, rest.trim().to_owned()),
        None => (false, format),
    };
    // The header row is the template over the headers, which also checks every field
    // before any row is printed (docker checks as it goes, and may stop halfway).
    let headers = columns
        .iter()
        .map(|c| (c.field.to_owned(), Value::from(c.header)))
        .collect::<Map<_, _>>();
    let header = render(&template, &Value::Object(headers))?;
    let lines = rows
        .iter()
        .map(|row| render(&template, &Value::Object(row.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    if table {
        let cells = |line: &str| line.split('\t').map(str::to_owned).collect::<Vec<_>>();
        let body: Vec<Vec<String>> = lines.iter().map(|l| cells(l)).collect();
        print_table(&cells(&header), &body);
    } else {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(0)
}

/// `table` alone: every column, tab-separated.
fn default_template(columns: &[Column]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| format!("{{{{.{}}}}}", c.field))
        .collect();
    fields.join("\t")
}

fn render(template: &str, row: &Value) -> Result<String, Failure> {
    render_row(template, row).map_err(|e| {
        Failure::user(e.to_string()).hint(Some(
            "fields as {{.ID}}, {{json .}} for a whole row, `table` first for a header; \
             the command's --help lists its fields"
                .into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 2] = [column("ID", "IMAGE ID"), column("Tag", "TAG")];

    #[test]
    fn table_alone_means_every_column() {
        assert_eq!(default_template(&COLUMNS), "{{.ID}}\t{{.Tag}}");
    }

    #[test]
    fn an_unknown_field_fails_before_any_row() {
        let row: Map<String, Value> = serde_json::from_str(r#"{"ID":"a","Tag":"b"}"#).unwrap();
        let err = print("{{.Repo}}", &COLUMNS, &[row]).unwrap_err();
        assert!(
            err.message.contains("can't evaluate field Repo"),
            "{}",
            err.message
        );
    }
}
