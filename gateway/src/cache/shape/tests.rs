#![allow(clippy::unwrap_used)]
use serde_json::{Value, json};

use super::*;

const CHAT_JSON: &[u8] = include_bytes!("../../spend/testdata/openai_chat.json");
const CHAT_SSE: &[u8] = include_bytes!("../../spend/testdata/openai_chat.sse");
const RESPONSES_JSON: &[u8] = include_bytes!("../../spend/testdata/openai_responses.json");
const RESPONSES_SSE: &[u8] = include_bytes!("../../spend/testdata/openai_responses.sse");

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The data of every event of a chat stream, each proved to be JSON; asserts `[DONE]` is last.
fn chat_chunks(events: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(events).unwrap();
    let blocks: Vec<&str> = text.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.last(), Some(&"data: [DONE]"), "{text}");
    blocks[..blocks.len() - 1]
        .iter()
        .map(|b| serde_json::from_str(b.strip_prefix("data: ").unwrap()).unwrap_or_else(|e| panic!("{e}: {b}")))
        .collect()
}

/// The (event type, data) of every event of a Responses stream, each data proved to be JSON.
fn responses_events(events: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(events).unwrap();
    assert!(text.ends_with("\n\n"));
    text.split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|b| {
            let (event, data) = b.split_once('\n').unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (event.strip_prefix("event: ").unwrap().to_owned(), data)
        })
        .collect()
}

/// Content concatenated per choice index.
fn contents(chunks: &[Value]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::<u64, String>::new();
    for choice in chunks.iter().flat_map(|c| c["choices"].as_array().unwrap()) {
        let text = out.entry(choice["index"].as_u64().unwrap()).or_default();
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
    }
    out
}

fn usage() -> Usage {
    Usage { input: 100, output: 40, cache_read: 900, cache_write: 7, cache_write_1h: 0, reasoning: 12 }
}

const TOOL_STREAM: &str = ": keep-alive\r\n\r\n\
event: message\r\nid: 1\r\ndata: {\"id\":\"c1\",\r\ndata:\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\r\n\r\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\r\n\r\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"get_time\",\"arguments\":\"{}\"}}]},\"finish_reason\":null}]}\r\n\r\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}\r\n\r\n\
data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\r\n\r\n\
data: [DONE]\r\n\r\n";

const TWO_CHOICES: &str = "\
data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":6,\"model\":\"m\",\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":\"Bon\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":6,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":6,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null},{\"index\":1,\"delta\":{\"content\":\"jour\"},\"finish_reason\":\"length\"}]}\n\n\
data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":6,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";

#[test]
fn chat_sample_stream_becomes_the_completion() {
    let body = value(&chat_events_to_json(CHAT_SSE, None).unwrap());
    let chunks = chat_chunks(CHAT_SSE);
    let expected = contents(&chunks)[&0].clone();
    assert!(expected.contains("done."));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], chunks[0]["id"]);
    assert_eq!(body["created"], chunks[0]["created"]);
    assert_eq!(body["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(body["system_fingerprint"], "fp_0aa8d3e20b");
    assert_eq!(body["service_tier"], "default");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert_eq!(choices[0]["logprobs"], Value::Null);
    let message = &choices[0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], expected.as_str());
    assert_eq!(message["refusal"], Value::Null);
    assert!(message.get("tool_calls").is_none());
    assert_eq!(body["usage"], chunks.last().unwrap()["usage"], "the stream's usage wins over the parameter");
    assert_eq!(value(&chat_events_to_json(CHAT_SSE, Some(&usage())).unwrap()), body);
}

#[test]
fn chat_json_round_trips_through_events() {
    let original = value(CHAT_JSON);
    let events = chat_json_to_events(CHAT_JSON, true).unwrap();
    let chunks = chat_chunks(&events);
    assert_eq!(chunks.len(), 3, "content, finish, usage");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], original["id"]);
        assert_eq!(chunk["created"], original["created"]);
        assert_eq!(chunk["model"], original["model"]);
        assert_eq!(chunk["system_fingerprint"], original["system_fingerprint"]);
        assert_eq!(chunk["service_tier"], original["service_tier"]);
    }
    assert_eq!(chunks[1]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[1]["choices"][0]["logprobs"], Value::Null);
    assert_eq!(chunks[2]["choices"], json!([]));
    assert_eq!(chunks[2]["usage"], original["usage"]);
    assert_eq!(value(&chat_events_to_json(&events, None).unwrap()), original);

    let events = chat_json_to_events(CHAT_JSON, false).unwrap();
    let chunks = chat_chunks(&events);
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let mut without_usage = original.clone();
    without_usage.as_object_mut().unwrap().remove("usage");
    assert_eq!(value(&chat_events_to_json(&events, None).unwrap()), without_usage);
}

#[test]
fn chat_chunks_concatenate_to_the_content() {
    let body = json!({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "first", "refusal": null}, "logprobs": null, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "no"}, "logprobs": null, "finish_reason": "stop"},
        ],
    });
    let events = chat_json_to_events(&serde_json::to_vec(&body).unwrap(), true).unwrap();
    let chunks = chat_chunks(&events);
    assert_eq!(chunks.len(), 4, "no usage chunk without a usage");
    assert_eq!(contents(&chunks), BTreeMap::from([(0, "first".to_owned()), (1, String::new())]));
    assert_eq!(chunks[1]["choices"][0]["delta"]["refusal"], "no");
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], Value::Null);
    let back = value(&chat_events_to_json(&events, None).unwrap());
    assert_eq!(back["choices"][1]["message"]["refusal"], "no");
    assert_eq!(back["choices"][1]["message"]["content"], Value::Null);
    assert_eq!(back["choices"][0]["message"]["content"], "first");
}

#[test]
fn chat_tool_calls_split_across_chunks_merge() {
    let body = value(&chat_events_to_json(TOOL_STREAM.as_bytes(), None).unwrap());
    let message = &body["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(
        message["tool_calls"],
        json!([
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
        ])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert!(body.get("usage").is_none());
    assert!(body.get("system_fingerprint").is_none());

    let events = chat_json_to_events(&serde_json::to_vec(&body).unwrap(), false).unwrap();
    let chunks = chat_chunks(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"]["tool_calls"][1]["index"], 1);
    assert_eq!(value(&chat_events_to_json(&events, None).unwrap()), body);
}

#[test]
fn chat_choices_are_merged_by_index() {
    let body = value(&chat_events_to_json(TWO_CHOICES.as_bytes(), None).unwrap());
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!((&choices[0]["index"], &choices[0]["message"]["content"]), (&json!(0), &json!("Hello")));
    assert_eq!((&choices[1]["index"], &choices[1]["message"]["content"]), (&json!(1), &json!("Bonjour")));
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert_eq!(choices[1]["finish_reason"], "length");

    let events = chat_json_to_events(&serde_json::to_vec(&body).unwrap(), false).unwrap();
    assert_eq!(contents(&chat_chunks(&events)), BTreeMap::from([(0, "Hello".to_owned()), (1, "Bonjour".to_owned())]));
}

#[test]
fn chat_logprobs_are_merged_and_carried() {
    let token = |t: &str| json!({"token": t, "logprob": -0.5, "bytes": null, "top_logprobs": []});
    let stream = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"id": "l", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [token("a")], "refusal": null}, "finish_reason": null}]}),
        json!({"id": "l", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": {"content": [token("b")], "refusal": null}, "finish_reason": "stop"}]}),
    );
    let body = value(&chat_events_to_json(stream.as_bytes(), None).unwrap());
    assert_eq!(body["choices"][0]["message"]["content"], "ab");
    assert_eq!(body["choices"][0]["logprobs"], json!({"content": [token("a"), token("b")], "refusal": null}));
    let events = chat_json_to_events(&serde_json::to_vec(&body).unwrap(), false).unwrap();
    assert_eq!(value(&chat_events_to_json(&events, None).unwrap()), body);
}

#[test]
fn chat_usage_parameter_fills_a_stream_without_usage() {
    let stream = TWO_CHOICES.as_bytes();
    let body = value(&chat_events_to_json(stream, Some(&usage())).unwrap());
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 1007, "completion_tokens": 40, "total_tokens": 1047,
            "prompt_tokens_details": {"cached_tokens": 900, "cache_write_tokens": 7},
            "completion_tokens_details": {"reasoning_tokens": 12},
        })
    );
    assert_eq!(Usage::from_openai_chat(&body["usage"]).unwrap(), usage(), "read back as written");
    assert!(value(&chat_events_to_json(stream, None).unwrap()).get("usage").is_none());
}

#[test]
fn chat_events_get_exactly_one_usage_chunk() {
    let stream = TWO_CHOICES.as_bytes();
    let with = chat_events_with_usage(stream, &usage()).unwrap();
    let before = chat_chunks(stream);
    let after = chat_chunks(&with);
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[..before.len()], before[..]);
    let added = after.last().unwrap();
    assert_eq!(added["choices"], json!([]));
    assert_eq!((&added["id"], &added["created"], &added["model"]), (&json!("c2"), &json!(6), &json!("m")));
    assert_eq!(added["object"], "chat.completion.chunk");
    assert_eq!(Usage::from_openai_chat(&added["usage"]).unwrap(), usage());
    let done = stream.len() - b"data: [DONE]\n\n".len();
    assert_eq!(with[..done], stream[..done], "the events before are the same bytes");
    assert!(with.ends_with(b"\n\ndata: [DONE]\n\n"));
    assert_eq!(chat_events_with_usage(&with, &Usage::default()).unwrap(), with, "idempotent");

    // The usage chunk of a stream that has one is kept, byte for byte.
    assert_eq!(chat_events_with_usage(CHAT_SSE, &usage()).unwrap(), CHAT_SSE);
    // `\r\n` streams: inserted before the [DONE] event, the rest untouched.
    let crlf = chat_events_with_usage(TOOL_STREAM.as_bytes(), &usage()).unwrap();
    assert!(crlf.ends_with(b"}\n\ndata: [DONE]\r\n\r\n"));
    let body = value(&chat_events_to_json(&crlf, None).unwrap());
    assert_eq!(body["usage"]["completion_tokens"], 40);
    assert_eq!(body["system_fingerprint"], Value::Null, "absent from the first chunk, absent from the added one");
}

#[test]
fn incomplete_or_garbage_chat_streams_are_refused() {
    let cut = &CHAT_SSE[..CHAT_SSE.len() - b"data: [DONE]\n\n".len()];
    let unterminated = &CHAT_SSE[..CHAT_SSE.len() - 2];
    let chunk_cut = &CHAT_SSE[..CHAT_SSE.len() / 2];
    let bad_chunk = b"data: {\"id\":\"x\",\"choices\":[\n\ndata: [DONE]\n\n";
    let error = b"data: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n";
    let streams: [&[u8]; 9] =
        [cut, unterminated, chunk_cut, b"data: [DONE]\n\n", bad_chunk, error, b"garbage", b"", &[0xff, 0xfe]];
    for events in streams {
        assert!(chat_events_to_json(events, Some(&usage())).is_none(), "{}", String::from_utf8_lossy(events));
        assert!(chat_events_with_usage(events, &usage()).is_none());
    }
    let bodies: [&[u8]; 4] = [b"garbage", b"[]", b"{\"id\":\"x\"}", b"{\"choices\":{}}"];
    for json in bodies {
        assert!(chat_json_to_events(json, true).is_none());
    }
}

#[test]
fn responses_sample_stream_becomes_its_response() {
    let body = value(&responses_events_to_json(RESPONSES_SSE).unwrap());
    let completed = responses_events(RESPONSES_SSE).into_iter().find(|(kind, _)| kind == "response.completed").unwrap();
    assert_eq!(body, completed.1["response"]);
    assert_eq!(body, value(RESPONSES_JSON));
    assert_eq!(body["status"], "completed");
}

#[test]
fn responses_json_round_trips_through_events() {
    let original = value(RESPONSES_JSON);
    let events = responses_json_to_events(RESPONSES_JSON).unwrap();
    assert_eq!(value(&responses_events_to_json(&events).unwrap()), original);

    let ours = responses_events(&events);
    for (i, (kind, data)) in ours.iter().enumerate() {
        assert_eq!(data["type"], kind.as_str());
        assert_eq!(data["sequence_number"], i, "numbered from 0, one by one");
    }
    let kinds: Vec<&str> = ours.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    // The sample's events, field for field (but its `obfuscation`).
    for (kind, mut data) in responses_events(RESPONSES_SSE) {
        data.as_object_mut().unwrap().remove("obfuscation");
        let (_, mine) = ours.iter().find(|(k, _)| *k == kind).unwrap();
        let mut mine = mine.clone();
        mine["sequence_number"] = data["sequence_number"].clone();
        assert_eq!(mine, data, "{kind}");
    }
    let text: String = ours
        .iter()
        .filter(|(kind, _)| kind == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, original["output"][0]["content"][0]["text"].as_str().unwrap());
}

#[test]
fn responses_function_calls_refusals_and_other_items_round_trip() {
    let response = json!({
        "id": "resp_1", "object": "response", "created_at": 1, "status": "incomplete", "model": "m",
        "error": null, "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"id": "rs_1", "type": "reasoning", "summary": []},
            {"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1",
             "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"id": "msg_1", "type": "message", "status": "incomplete", "role": "assistant", "content": [
                {"type": "refusal", "refusal": "I can't."},
                {"type": "output_text", "text": "See", "logprobs": [],
                 "annotations": [{"type": "url_citation", "url": "https://example.com", "start_index": 0, "end_index": 3}]},
            ]},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
    });
    let events = responses_json_to_events(&serde_json::to_vec(&response).unwrap()).unwrap();
    assert_eq!(value(&responses_events_to_json(&events).unwrap()), response);

    let events = responses_events(&events);
    let (last, terminal) = events.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(terminal["response"], response);
    let created = &events[0].1["response"];
    assert_eq!(
        (&created["status"], &created["output"], &created["usage"]),
        (&json!("in_progress"), &json!([]), &Value::Null)
    );
    assert_eq!(created["incomplete_details"], Value::Null);
    let find = |kind: &str| events.iter().filter(|(k, _)| k == kind).map(|(_, d)| d).collect::<Vec<_>>();
    let added = find("response.output_item.added");
    assert_eq!(added.len(), 3);
    assert_eq!(added[0]["item"], response["output"][0], "no status to set");
    assert_eq!((&added[1]["item"]["arguments"], &added[1]["item"]["status"]), (&json!(""), &json!("in_progress")));
    assert_eq!(added[2]["item"]["content"], json!([]));
    let delta = find("response.function_call_arguments.delta");
    assert_eq!(
        (&delta[0]["delta"], &delta[0]["item_id"], &delta[0]["output_index"]),
        (&json!("{\"city\":\"Paris\"}"), &json!("fc_1"), &json!(1))
    );
    assert_eq!(find("response.function_call_arguments.done")[0]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(find("response.refusal.delta")[0]["delta"], "I can't.");
    assert_eq!(find("response.refusal.done")[0]["refusal"], "I can't.");
    let parts = find("response.content_part.added");
    assert_eq!(parts[0]["part"], json!({"type": "refusal", "refusal": ""}));
    assert_eq!(parts[1]["part"], json!({"type": "output_text", "text": "", "logprobs": [], "annotations": []}));
    assert_eq!(find("response.output_text.annotation.added")[0]["annotation"]["url"], "https://example.com");
    assert_eq!(find("response.output_text.done")[0]["content_index"], 1);
    assert_eq!(find("response.content_part.done")[1]["part"], response["output"][2]["content"][1]);
    let done = find("response.output_item.done");
    assert_eq!(done.iter().map(|d| d["item"].clone()).collect::<Vec<_>>(), response["output"].as_array().unwrap()[..]);
}

#[test]
fn responses_streams_without_a_terminal_event_are_refused() {
    let created: Vec<u8> =
        RESPONSES_SSE.split(|b| *b == b'\n').take(3).flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    assert!(created.starts_with(b"event: response.created\n"));
    assert!(responses_events_to_json(&created).is_none());
    let mut failed = json!({"id": "r", "status": "failed", "output": []});
    let events = responses_json_to_events(&serde_json::to_vec(&failed).unwrap()).unwrap();
    assert_eq!(responses_events(&events).last().unwrap().0, "response.failed");
    assert!(responses_events_to_json(&events).is_none(), "a failed response is no answer");
    failed["output"] = json!("nope");
    assert!(responses_json_to_events(&serde_json::to_vec(&failed).unwrap()).is_none());
    assert!(responses_events_to_json(b"event: response.completed\ndata: {oops\n\n").is_none());
    assert!(responses_json_to_events(b"garbage").is_none());
}
