//! The load tester's gates, as Flagger's: keyed `<name>.<namespace>` (and `rollback.<name>.<namespace>`),
//! closed until opened. Flagger keeps them in memory only; given a file, Serin's survive a restart.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

pub struct Gates {
    open: Mutex<BTreeSet<String>>,
    file: Option<PathBuf>,
}

impl Gates {
    /// Gates kept in memory, or in `file` (read now, written on every change).
    pub fn new(file: Option<PathBuf>) -> std::io::Result<Self> {
        let open = match &file {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(path)?;
                serde_json::from_str::<BTreeSet<String>>(&text).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: not a list of open gates: {e}", path.display()),
                    )
                })?
            }
            _ => BTreeSet::new(),
        };
        Ok(Gates {
            open: Mutex::new(open),
            file,
        })
    }

    pub fn is_open(&self, key: &str) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    pub fn set(&self, key: &str, open: bool) -> std::io::Result<()> {
        let mut gates = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if open {
            gates.insert(key.to_string())
        } else {
            gates.remove(key)
        };
        if let (true, Some(path)) = (changed, &self.file) {
            // Written whole and renamed into place: a crash leaves the old list or the new, never half.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&*gates)?)?;
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_are_closed_until_opened_and_a_file_keeps_them() {
        let dir = std::env::temp_dir().join(format!("serin-gates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gates.json");
        let _ = std::fs::remove_file(&file);
        let g = Gates::new(Some(file.clone())).unwrap();
        assert!(!g.is_open("podinfo.test"));
        g.set("podinfo.test", true).unwrap();
        g.set("rollback.podinfo.test", true).unwrap();
        g.set("rollback.podinfo.test", false).unwrap();
        let again = Gates::new(Some(file.clone())).unwrap();
        assert!(again.is_open("podinfo.test"));
        assert!(!again.is_open("rollback.podinfo.test"));
        std::fs::write(&file, "nonsense").unwrap();
        assert!(Gates::new(Some(file)).is_err());
    }
}
