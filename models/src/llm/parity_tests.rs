//! Parity with transformers (float32, CPU) on the tiny random Qwen2 and
//! Llama models of tests/fixtures/llm (tools/fixtures/gen_llm.py):
//! logits max abs error <= 1e-4, identical greedy ids.

use super::*;
use crate::runtime::ModelDir;
use std::path::PathBuf;

fn fixture(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/llm")
        .join(kind)
}

fn load(kind: &str) -> (Llm, serde_json::Value) {
    let dir = ModelDir::open(fixture(kind)).unwrap();
    let llm = Llm::load(&dir, DType::F32, &Device::Cpu).unwrap();
    let r = std::fs::read_to_string(fixture(kind).join("reference.json")).unwrap();
    (llm, serde_json::from_str(&r).unwrap())
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn max_abs(a: &[Vec<f32>], b: &serde_json::Value) -> f32 {
    let b: Vec<Vec<f32>> = serde_json::from_value(b.clone()).unwrap();
    assert_eq!(a.len(), b.len());
    let mut m = 0f32;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            m = m.max((p - q).abs());
        }
    }
    m
}

fn logits_parity(kind: &str) {
    let (llm, r) = load(kind);
    let m = &llm.model;
    let cases = r["logits"].as_array().unwrap();
    // one sequence at a time, whole prompt
    for c in cases {
        let p = ids(&c["ids"]);
        let mut cache = m.new_cache(64).unwrap();
        let l = m
            .forward(&[SeqInput { tokens: &p }], &mut [&mut cache], true)
            .unwrap();
        let err = max_abs(&l.to_vec2().unwrap(), &c["logits"]);
        eprintln!("{kind}: logits max abs err {err:.2e}");
        assert!(err <= 1e-4, "{kind}: logits max abs err {err}");
    }
    // all whole prompts in one ragged batch (22 rows: candle's gemm path, not the thin-M kernel)
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| m.new_cache(64).unwrap()).collect();
    let seqs: Vec<SeqInput> = prompts.iter().map(|p| SeqInput { tokens: p }).collect();
    let mut cr: Vec<&mut KvCache> = caches.iter_mut().collect();
    let l = m
        .forward(&seqs, &mut cr, true)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut off = 0;
    for (p, c) in prompts.iter().zip(cases) {
        let err = max_abs(&l[off..off + p.len()], &c["logits"]);
        assert!(
            err <= 1e-4,
            "{kind}: ragged prefill logits max abs err {err}"
        );
        off += p.len();
    }
    // all sequences in one ragged batch, prompt split into prefill + decode steps
    let prompts: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["ids"])).collect();
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| m.new_cache(64).unwrap()).collect();
    let mut rows: Vec<Vec<Vec<f32>>> = vec![Vec::new(); prompts.len()];
    let split = 2;
    let seqs: Vec<SeqInput> = prompts
        .iter()
        .map(|p| SeqInput {
            tokens: &p[..split],
        })
        .collect();
    let mut cr: Vec<&mut KvCache> = caches.iter_mut().collect();
    let l = m
        .forward(&seqs, &mut cr, true)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, row) in l.chunks(split).enumerate() {
        rows[i].extend(row.iter().cloned());
    }
    for pos in split..prompts.iter().map(Vec::len).max().unwrap() {
        let live: Vec<usize> = (0..prompts.len())
            .filter(|&i| pos < prompts[i].len())
            .collect();
        let seqs: Vec<SeqInput> = live
            .iter()
            .map(|&i| SeqInput {
                tokens: &prompts[i][pos..pos + 1],
            })
            .collect();
        let mut cr: Vec<&mut KvCache> = caches
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| live.contains(i))
            .map(|(_, c)| c)
            .collect();
        let l = m
            .forward(&seqs, &mut cr, false)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (k, &i) in live.iter().enumerate() {
            rows[i].push(l[k].clone());
        }
    }
    for (i, c) in cases.iter().enumerate() {
        let err = max_abs(&rows[i], &c["logits"]);
        assert!(
            err <= 1e-4,
            "{kind}: batched/incremental logits max abs err {err}"
        );
    }
}

fn strip_pad(v: Vec<u32>, eos: &[u32]) -> Vec<u32> {
    match v.iter().position(|t| eos.contains(t)) {
        Some(i) => v[..=i].to_vec(),
        None => v,
    }
}

fn greedy_parity(kind: &str) {
    let (llm, r) = load(kind);
    let reqs = |key: &str| -> Vec<(GenerateRequest, Vec<u32>)> {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let req = GenerateRequest {
                    prompt_ids: ids(&c["ids"]),
                    max_new_tokens: 20,
                    sampling: SamplingParams::greedy(),
                    stop_strings: vec![],
                };
                (req, strip_pad(ids(&c["new_ids"]), &llm.eos_ids))
            })
            .collect()
    };
    // batch 1 (sequential) and batch 2 (continuous batching: the third request joins
    // when the first one finishes)
    for (key, max_batch) in [("greedy", 1), ("batch_greedy", 2), ("batch_greedy", 8)] {
        let cases = reqs(key);
        let want: Vec<Vec<u32>> = cases.iter().map(|c| c.1.clone()).collect();
        let mut got = vec![Vec::new(); cases.len()];
        let mut engine = llm.engine(max_batch, 128);
        engine.run(cases.into_iter().map(|c| c.0).collect(), |i, g| {
            got[i] = g.unwrap().ids
        });
        assert_eq!(got, want, "{kind} {key} batch {max_batch}");
        assert!(engine.stats.max_active <= max_batch);
    }
    let distinct: std::collections::HashSet<u32> =
        reqs("greedy").iter().flat_map(|c| c.1.clone()).collect();
    assert!(distinct.len() > 20, "fixture greedy ids should vary");
}

#[test]
fn qwen2_logits_match_transformers() {
    logits_parity("qwen2");
}

#[test]
fn llama_logits_match_transformers() {
    logits_parity("llama");
}

#[test]
fn qwen2_greedy_matches_transformers() {
    greedy_parity("qwen2");
}

#[test]
fn llama_greedy_matches_transformers() {
    greedy_parity("llama");
}

#[test]
fn seeded_sampling_is_deterministic_and_batch_independent() {
    let (llm, _) = load("qwen2");
    let req = |seed| GenerateRequest {
        prompt_ids: vec![5, 6, 7, 8],
        max_new_tokens: 12,
        sampling: SamplingParams {
            temperature: 0.9,
            top_k: 50,
            top_p: 0.95,
            repetition_penalty: 1.1,
            seed,
            ..Default::default()
        },
        stop_strings: vec![],
    };
    let run = |reqs: Vec<GenerateRequest>, b| {
        let mut out = vec![Vec::new(); reqs.len()];
        llm.engine(b, 64).run(reqs, |i, g| out[i] = g.unwrap().ids);
        out
    };
    let a = run(vec![req(1), req(2), req(1)], 1);
    let b = run(vec![req(1), req(2), req(1)], 3);
    assert_eq!(a, b, "batching must not change seeded samples");
    assert_eq!(a[0], a[2]);
    assert_ne!(a[0], a[1]);
}

#[test]
fn stop_strings_length_and_bad_requests() {
    let (llm, r) = load("llama");
    let tok = llm.tokenizer().unwrap();
    let case = &r["greedy"][1];
    let prompt = ids(&case["ids"]);
    let full = ids(&case["new_ids"]);
    let text = tok.decode(&full, true).unwrap();
    // stop on a piece of the 6th..8th token's text
    let stop_piece = tok.decode(&full[5..7], true).unwrap();
    let stop = stop_piece.trim().to_string();
    assert!(!stop.is_empty());
    let mut out = Vec::new();
    let reqs = vec![
        GenerateRequest {
            prompt_ids: prompt.clone(),
            max_new_tokens: 20,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![stop.clone()],
        },
        GenerateRequest {
            prompt_ids: prompt.clone(),
            max_new_tokens: 3,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        },
        GenerateRequest {
            prompt_ids: vec![],
            max_new_tokens: 3,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        },
        GenerateRequest {
            prompt_ids: vec![1, 99999],
            max_new_tokens: 3,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        },
        GenerateRequest {
            prompt_ids: vec![3; 40],
            max_new_tokens: 3,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        },
        GenerateRequest {
            prompt_ids: vec![3; 30],
            max_new_tokens: 30,
            sampling: SamplingParams::greedy(),
            stop_strings: vec![],
        },
    ];
    let mut engine = llm.engine(4, 32);
    engine.run(reqs, |i, g| out.push((i, g)));
    out.sort_by_key(|x| x.0);
    let g0 = out[0].1.as_ref().unwrap();
    assert_eq!(g0.finish, FinishReason::Stop);
    assert!(
        !g0.text.contains(&stop) && text.starts_with(&g0.text),
        "{:?} vs {text:?}",
        g0.text
    );
    assert!(g0.ids.len() < 20);
    let g1 = out[1].1.as_ref().unwrap();
    assert_eq!(
        (g1.finish, g1.ids.as_slice()),
        (FinishReason::Length, &full[..3])
    );
    assert!(matches!(out[2].1, Err(LlmError::Input(_))));
    assert!(matches!(
        out[3].1,
        Err(LlmError::IdOutOfVocab { id: 99999, .. })
    ));
    assert!(matches!(
        out[4].1,
        Err(LlmError::PromptTooLong {
            tokens: 40,
            context: 32
        })
    ));
    let g5 = out[5].1.as_ref().unwrap();
    assert_eq!(g5.finish, FinishReason::Length);
    assert!(g5.prompt_tokens + g5.generated_tokens <= 32);
}
