//! `--format` of the commands that list things (`kiln images`, `kiln ps`, `kiln
//! history`): docker's templates applied to each row.
//!
//! Exists so that scripts written for docker (`docker images --format
//! '{{.Repository}}:{{.Tag}}'`, `docker ps --format 'table {{.Names}}\t{{.Status}}'`) work
//! with kiln unchanged: the same field names, `table` for a header and aligned columns,
//! `\t` and `\n` written as two characters, `{{json .}}` for a whole row. A command's
//! plain table is its default template, so both go one way.

use serde_json::{Map, Value};

use super::output::print_table;
use super::template::{Template, TemplateError};
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

/// What a listing command prints: its rows' columns, and the template it uses when no
/// `--format` is given.
pub struct Listing {
    pub default_format: &'static str,
    pub columns: &'static [Column],
}

/// A row: each column's field and its text.
pub fn row<const N: usize>(fields: [(&str, String); N]) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .map(|(field, text)| (field.to_owned(), Value::from(text)))
        .collect();
    Value::Object(map)
}

impl Listing {
    /// Prints `rows` (made by [`row`]) through `format`, or the default one.
    pub fn print(&self, format: Option<&str>, rows: &[Value]) -> CmdResult {
        let format = format
            .unwrap_or(self.default_format)
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let (table, text) = match format.strip_prefix("table") {
            Some(rest) if rest.trim().is_empty() => (true, default_template(self.columns)),
            Some(rest) => (true, rest.trim().to_owned()),
            None => (false, format),
        };
        let template = Template::parse(&text).map_err(template_failure)?;
        // The header row is the template over the headers, which also checks every field
        // before any row is printed (docker checks as it goes, and may stop halfway).
        let headers = self
            .columns
            .iter()
            .map(|c| (c.field.to_owned(), Value::from(c.header)))
            .collect::<Map<_, _>>();
        let render = |row: &Value| template.render_row(row).map_err(template_failure);
        let header = render(&Value::Object(headers))?;
        let lines = rows.iter().map(render).collect::<Result<Vec<_>, _>>()?;
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
}

/// `table` alone: every column, tab-separated.
fn default_template(columns: &[Column]) -> String {
    let fields: Vec<String> = columns
        .iter()
        .map(|c| format!("{{{{.{}}}}}", c.field))
        .collect();
    fields.join("\t")
}

fn template_failure(e: TemplateError) -> Failure {
    Failure::user(e.to_string()).hint(Some(
        "fields as {{.ID}}, {{json .}} for a whole row, `table` first for a header; \
         the command's --help lists its fields"
            .into(),
    ))
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
        let listing = Listing {
            default_format: "{{.ID}}",
            columns: &COLUMNS,
        };
        let row = row([("ID", "a".into()), ("Tag", "b".into())]);
        let err = listing.print(Some("{{.Repo}}"), &[row]).unwrap_err();
        assert!(
            err.message.contains("can't evaluate field Repo"),
            "{}",
            err.message
        );
    }
}
