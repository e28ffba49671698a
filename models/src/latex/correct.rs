//! Speech-to-LaTeX, cascade route: an instruction-tuned LLM (Qwen2/Llama on
//! [`crate::llm`]) turns spoken maths (an ASR transcript) into LaTeX.
//!
//! The prompt is the S2L paper's post-correction prompt:
//! - system: [`SYSTEM_PROMPT`] ("You are a helpful assistant.");
//! - user: [`USER_PROMPT`] with `{}` replaced by the spoken text
//!   ("Please, give me LaTeX representation of the following formula.
//!   Formula pronunciation: {whisper_text}").
//!
//! Few-shot examples (spoken, LaTeX) become earlier user/assistant turns of the
//! same form, in file order. Models without a chat template get a plain-text
//! prompt: the system line, then `Formula pronunciation: …\nLaTeX: …` blocks,
//! ending with `LaTeX:` (generation stops at a newline).
//!
//! Decoding is greedy. The answer is post-processed to one line by
//! [`one_line`]: code fences and a leading `LaTeX:` label are dropped, the
//! first non-empty line is kept, and `$…$`, `$$…$$`, `\[…\]`, `\(…\)` around
//! the whole answer are removed.

use crate::llm::{GenerateRequest, Llm, LlmError, SamplingParams};
use crate::text::ChatMessage;
use std::sync::atomic::{AtomicBool, Ordering};

/// The S2L system prompt.
pub const SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// The S2L user prompt; `{}` is the spoken text.
pub const USER_PROMPT: &str =
    "Please, give me LaTeX representation of the following formula. Formula pronunciation: {}";

/// Spoken text → LaTeX with an LLM, batched.
pub struct LatexCorrector {
    pub llm: Llm,
    /// Few-shot (spoken, LaTeX) pairs.
    pub examples: Vec<(String, String)>,
    pub max_new_tokens: usize,
    pub max_batch: usize,
}

/// Reads few-shot examples: `spoken<TAB>latex` per line; `#` lines and blank
/// lines are skipped. Errors name the line.
pub fn parse_examples(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('\t') {
            Some((s, l)) if !s.trim().is_empty() && !l.trim().is_empty() => {
                out.push((s.trim().to_string(), l.trim().to_string()))
            }
            _ => return Err(format!("line {}: expected spoken<TAB>latex", n + 1)),
        }
    }
    Ok(out)
}

impl LatexCorrector {
    pub fn new(llm: Llm, examples: Vec<(String, String)>) -> Self {
        Self {
            llm,
            examples,
            max_new_tokens: 128,
            max_batch: 8,
        }
    }

    /// The chat messages for one input.
    pub fn messages(&self, spoken: &str) -> Vec<ChatMessage> {
        let mut m = vec![ChatMessage::new("system", SYSTEM_PROMPT)];
        for (s, l) in &self.examples {
            m.push(ChatMessage::new("user", &USER_PROMPT.replace("{}", s)));
            m.push(ChatMessage::new("assistant", l));
        }
        m.push(ChatMessage::new("user", &USER_PROMPT.replace("{}", spoken)));
        m
    }

    /// The plain-text prompt (models without a chat template).
    pub fn plain_prompt(&self, spoken: &str) -> String {
        let mut p = format!("{SYSTEM_PROMPT}\n\n");
        for (s, l) in &self.examples {
            p.push_str(&format!("Formula pronunciation: {s}\nLaTeX: {l}\n\n"));
        }
        p.push_str(&format!("Formula pronunciation: {spoken}\nLaTeX:"));
        p
    }

    fn request(&self, spoken: &str) -> Result<GenerateRequest, LlmError> {
        let tok = self.llm.tokenizer()?;
        let (text, special, stop) = match &self.llm.chat {
            Some(chat) => (chat.render(&self.messages(spoken), true)?, false, vec![]),
            None => (self.plain_prompt(spoken), true, vec!["\n".to_string()]),
        };
        Ok(GenerateRequest {
            prompt_ids: tok.encode(&text, special)?.ids,
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams {
                greedy: true,
                ..Default::default()
            },
            stop_strings: stop,
        })
    }

    /// LaTeX (one line, possibly empty) for each input, in order; an input
    /// that fails (prompt too long for the context, ...) gets its error.
    pub fn convert_batch(&self, inputs: &[String]) -> Vec<Result<String, LlmError>> {
        self.convert_batch_until(inputs, &AtomicBool::new(false))
    }

    /// Like [`LatexCorrector::convert_batch`], stopping once `stop` is set
    /// (Ctrl-C): inputs being generated keep the line made so far, inputs not
    /// started get an "interrupted" error.
    pub fn convert_batch_until(
        &self,
        inputs: &[String],
        stop: &AtomicBool,
    ) -> Vec<Result<String, LlmError>> {
        let mut results: Vec<Option<Result<String, LlmError>>> =
            (0..inputs.len()).map(|_| None).collect();
        let mut reqs = Vec::new();
        let mut index = Vec::new();
        for (i, s) in inputs.iter().enumerate() {
            match self.request(s) {
                Ok(r) => {
                    reqs.push(r);
                    index.push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let max_pos = self.llm.model.config().max_position_embeddings;
        let capacity = reqs
            .iter()
            .map(|r| r.prompt_ids.len() + r.max_new_tokens)
            .max()
            .unwrap_or(1)
            .min(max_pos);
        let mut engine = self.llm.engine(self.max_batch, capacity);
        engine.run_until(reqs, stop, |k, r| {
            results[index[k]] = Some(r.map(|g| one_line(&g.text)));
        });
        let missing = if stop.load(Ordering::SeqCst) {
            "interrupted"
        } else {
            "not generated"
        };
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(LlmError::Input(missing.into()))))
            .collect()
    }
}

/// An LLM answer reduced to one line of LaTeX (see the module doc).
pub fn one_line(answer: &str) -> String {
    let mut line = answer
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .map(|l| l.strip_prefix("LaTeX:").unwrap_or(l).trim())
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    for (open, close) in [("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")] {
        if line.len() >= open.len() + close.len() && line.starts_with(open) && line.ends_with(close)
        {
            let inner = &line[open.len()..line.len() - close.len()];
            if !inner.contains(open) || open.len() > 1 {
                line = inner.trim().to_string();
                break;
            }
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_one_line() {
        assert_eq!(one_line("```latex\n$x^{2}$\n```"), "x^{2}");
        assert_eq!(
            one_line("\n\nLaTeX: \\[ \\frac{1}{2} \\]\nmore"),
            "\\frac{1}{2}"
        );
        assert_eq!(one_line("the area is $\\pi r^2$"), "the area is $\\pi r^2$");
        assert_eq!(one_line("$a$ and $b$"), "$a$ and $b$");
        assert_eq!(one_line(""), "");
    }

    #[test]
    fn examples_file() {
        let e = parse_examples("# c\nx squared\tx^{2}\n\n").unwrap();
        assert_eq!(e, vec![("x squared".into(), "x^{2}".into())]);
        assert!(parse_examples("no tab").unwrap_err().contains("line 1"));
    }

    #[test]
    fn random_qwen2_runs_end_to_end() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llm/qwen2");
        let dir = crate::runtime::ModelDir::open(&dir).unwrap();
        let llm = Llm::load(&dir, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
        let mut c = LatexCorrector::new(llm, vec![("x squared".into(), "x^{2}".into())]);
        c.max_new_tokens = 12;
        let m = c.messages("one over x");
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].content, SYSTEM_PROMPT);
        assert!(m[3].content.ends_with("Formula pronunciation: one over x"));
        let inputs = vec!["one over x".to_string(), "a plus b".to_string()];
        let out = c.convert_batch(&inputs);
        assert_eq!(out.len(), 2);
        for o in out {
            assert!(!o.unwrap().contains('\n'));
        }
    }
}
