//! Chat templates from `tokenizer_config.json` (or `chat_template.jinja`),
//! rendered with minijinja the way `transformers` renders them
//! (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).

use super::{Result, TextError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A compiled chat template plus the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
}

/// `"<s>"` or `{"content": "<s>", ...}` (an AddedToken dict) or null.
fn token_field(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// Reads the template from a model directory: `chat_template` in
    /// `tokenizer_config.json` (a string, or a list of named templates:
    /// `default` is used), else `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.is_file() {
            crate::runtime::read_json(&cfg_path)?
        } else {
            serde_json::Value::Null
        };
        let mut source = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        if source.is_none() {
            let j = dir.join("chat_template.jinja");
            if j.is_file() {
                source = Some(std::fs::read_to_string(&j).map_err(|e| TextError::Load {
                    path: j.clone(),
                    msg: e.to_string(),
                })?);
            }
        }
        let source = source.ok_or_else(|| TextError::NoChatTemplate {
            path: dir.to_path_buf(),
        })?;
        let mut t = Self::new(&source)?;
        t.bos_token = token_field(cfg.get("bos_token"));
        t.eos_token = token_field(cfg.get("eos_token"));
        t.pad_token = token_field(cfg.get("pad_token"));
        Ok(t)
    }

    /// Compiles a template source.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| TextError::Template(e.to_string()))?;
        Ok(Self {
            env,
            bos_token: None,
            eos_token: None,
            pad_token: None,
        })
    }

    /// Renders `messages`; `add_generation_prompt` opens the assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| TextError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
            pad_token => self.pad_token.clone().unwrap_or_default(),
            tools => minijinja::Value::from(()),
        })
        .map_err(|e| TextError::Template(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_python_methods_and_errors() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{{ m.role.upper() }}: {{ m.content.strip() }}\n{% endfor %}\
             {% if add_generation_prompt %}A:{% endif %}",
        )
        .unwrap();
        let out = t.render(&[ChatMessage::new("user", " hi ")], true).unwrap();
        assert_eq!(out, "USER: hi\nA:");
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}").unwrap();
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
        assert!(ChatTemplate::new("{% for %}").is_err());
    }
}
