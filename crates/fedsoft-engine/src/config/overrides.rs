//! `--set section.field=value`: overrides applied to the parsed TOML document before it is checked.

use super::ConfigError;

/// Applies `a.b.c=value`: `value` is read as a TOML value (number, bool, array, inline table, quoted
/// string) and, failing that, taken as a bare string.
pub fn apply_override(doc: &mut toml::Table, arg: &str) -> Result<(), ConfigError> {
    let err = |m: &str| ConfigError::Override { arg: arg.into(), message: m.into() };
    let (key, raw) = arg.split_once('=').ok_or_else(|| err("expected key=value"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(err("the key must be a dotted path such as lora.rank"));
    }
    // One value only: text after a line break would otherwise be read as further fields, or silently cut off.
    if raw.contains(['\n', '\r']) {
        return Err(err("the value holds a line break; give one TOML value per --set (one --set for each field)"));
    }
    let value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) if t.len() == 1 => t.remove("v").expect("parsed key"),
        Ok(_) => return Err(err("the value must be one TOML value; give one --set for each field")),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| err(&format!("{p} is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_line_break_is_refused_not_cut() {
        let mut doc = toml::Table::new();
        let err = apply_override(&mut doc, "lora.rank=4\nseed=5").unwrap_err().to_string();
        assert!(err.contains("lora.rank=4\nseed=5") || err.contains("lora.rank=4"), "{err}");
        assert!(err.contains("the value holds a line break; give one TOML value per --set"), "{err}");
        assert!(doc.is_empty(), "nothing applied");
        assert!(apply_override(&mut doc, "name=a\r").is_err());
        apply_override(&mut doc, "lora.rank=4").unwrap();
        assert_eq!(doc["lora"]["rank"].as_integer(), Some(4));
        apply_override(&mut doc, "partition={kind=\"dirichlet\",alpha=0.3}").unwrap();
        assert_eq!(doc["partition"]["alpha"].as_float(), Some(0.3));
    }
}
