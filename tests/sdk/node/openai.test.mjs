// The gateway as the official OpenAI Node SDK (`openai` on npm) sees it.
//
// Run by tests/sdk/run.sh through with_gateway.py, which starts the standalone gateway on the
// sample manifests (config/samples) exactly as the Python suite does and passes its address and
// the sample token in UPROX_BASE_URL and UPROX_TOKEN. The sample `mock` provider answers offline.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import OpenAI, { toFile } from 'openai';

const BASE_URL = process.env.UPROX_BASE_URL;
const TOKEN = process.env.UPROX_TOKEN;
if (!BASE_URL || !TOKEN) {
  throw new Error('UPROX_BASE_URL and UPROX_TOKEN must be set (tests/sdk/node/with_gateway.py sets them)');
}

const MODEL = 'mock-1';
const MESSAGES = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Name three primary colours.' },
];

/** Every request the SDK sent and the JSON answer it got, as seen on the wire. */
const wire = [];

/** A fetch that records what the SDK sends and receives before the SDK decodes it. */
async function recordingFetch(url, init) {
  const response = await fetch(url, init);
  // Uploads send multipart bodies; only JSON bodies are recorded.
  let body = null;
  if (typeof init?.body === 'string') {
    try {
      body = JSON.parse(init.body);
    } catch {
      body = init.body;
    }
  }
  const entry = { url: String(url), method: init?.method ?? 'GET', body };
  if ((response.headers.get('content-type') ?? '').startsWith('application/json')) {
    entry.answer = await response.clone().json();
  }
  wire.push(entry);
  return response;
}

function client(apiKey = TOKEN) {
  return new OpenAI({ baseURL: `${BASE_URL}/v1`, apiKey, maxRetries: 0, timeout: 10_000, fetch: recordingFetch });
}

const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

test('models.list pages through the models the token may use', async () => {
  const models = [];
  for await (const model of client().models.list()) {
    models.push(model);
  }
  const ids = models.map((m) => m.id);
  assert.ok(ids.includes('mock-1') && ids.includes('mock-2'), `${ids}`);
  assert.equal(new Set(ids).size, ids.length, 'ids are unique');
  for (const m of models) {
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(typeof m.owned_by, 'string');
  }
});

test('models.retrieve answers one model, or NotFoundError', async () => {
  const model = await client().models.retrieve(MODEL);
  assert.deepEqual(model, { id: MODEL, object: 'model', created: 0, owned_by: 'mock' });

  await assert.rejects(client().models.retrieve('no-such-model'), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, `${err}`);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.type, 'invalid_request_error');
    return true;
  });
  // The SDK escapes the id into one path segment; the gateway decodes it.
  await assert.rejects(client().models.retrieve('org/no-such-model'), (err) => err.status === 404);
  assert.ok(wire.some((w) => w.url.endsWith('/v1/models/org%2Fno-such-model')));
});

test('embeddings.create asks for base64 and decodes vectors of the requested dimensions', async () => {
  const result = await client().embeddings.create({ model: MODEL, input: 'hello', dimensions: 16 });
  const sent = wire.at(-1);
  assert.equal(sent.body.encoding_format, 'base64', 'the SDK asks for base64 by default');
  assert.equal(typeof sent.answer.data[0].embedding, 'string', 'and the gateway answers base64');

  assert.equal(result.object, 'list');
  assert.equal(result.model, MODEL);
  assert.equal(result.data.length, 1);
  const vector = result.data[0].embedding;
  assert.ok(Array.isArray(vector));
  assert.equal(vector.length, 16);
  assert.ok(vector.every((x) => Number.isFinite(x) && x >= -1 && x <= 1), `${vector}`);
  assert.ok(Math.abs(norm(vector) - 1) < 1e-5, `norm ${norm(vector)}`);
  assert.ok(result.usage.prompt_tokens > 0);

  // The same numbers as JSON floats, and the same vector every time.
  const floats = await client().embeddings.create({
    model: MODEL,
    input: 'hello',
    dimensions: 16,
    encoding_format: 'float',
  });
  assert.deepEqual(floats.data[0].embedding.map(Math.fround), vector);
  const again = await client().embeddings.create({ model: MODEL, input: 'hello', dimensions: 16 });
  assert.deepEqual(again.data[0].embedding, vector);

  // Asked for explicitly, base64 is returned undecoded.
  const raw = await client().embeddings.create({ model: MODEL, input: 'hello', encoding_format: 'base64' });
  assert.equal(typeof raw.data[0].embedding, 'string');
  assert.equal(Buffer.from(raw.data[0].embedding, 'base64').length, 8 * 4, 'eight float32 by default');
});

test('embeddings.create takes arrays of strings and of token ids', async () => {
  const texts = await client().embeddings.create({ model: MODEL, input: ['first', 'second', 'third'] });
  assert.deepEqual(
    texts.data.map((d) => d.index),
    [0, 1, 2],
  );
  assert.ok(texts.data.every((d) => d.embedding.length === 8));
  const tokens = await client().embeddings.create({ model: MODEL, input: [[101, 2023], [102]] });
  assert.equal(tokens.data.length, 2);
  assert.equal(tokens.usage.prompt_tokens, 3);
});

test('chat.completions.create answers and streams the same text', async () => {
  const completion = await client().chat.completions.create({ model: MODEL, messages: MESSAGES });
  assert.equal(completion.object, 'chat.completion');
  const text = completion.choices[0].message.content;
  assert.ok(text && text.trim().length > 0);
  assert.equal(completion.choices[0].finish_reason, 'stop');
  const usage = completion.usage;
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);

  const stream = await client().chat.completions.create({
    model: MODEL,
    messages: MESSAGES,
    stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  let chunks = 0;
  let finish = null;
  let streamedUsage = null;
  for await (const chunk of stream) {
    chunks += 1;
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const choice of chunk.choices) {
      streamed += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
    streamedUsage = chunk.usage ?? streamedUsage;
  }
  assert.ok(chunks > 2, `${chunks} chunks`);
  assert.equal(streamed, text);
  assert.equal(finish, 'stop');
  assert.deepEqual(streamedUsage, usage);
});

test('a bad token is an AuthenticationError', async () => {
  const bad = `uprox_live_${'A'.repeat(43)}`;
  await assert.rejects(client(bad).chat.completions.create({ model: MODEL, messages: MESSAGES }), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, `${err}`);
    assert.equal(err.status, 401);
    return true;
  });
});

test('responses.create answers, and streams the same text with its events in order', async () => {
  const input = 'Name three primary colours.';
  const response = await client().responses.create({ model: MODEL, input, instructions: 'Be terse.' });
  assert.equal(response.object, 'response');
  assert.equal(response.status, 'completed');
  const text = response.output_text;
  assert.ok(text && text.trim().length > 0);
  const usage = response.usage;
  assert.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);

  const stream = await client().responses.create({ model: MODEL, input, instructions: 'Be terse.', stream: true });
  const types = [];
  let streamed = '';
  let completed = null;
  let sequence = -1;
  for await (const event of stream) {
    types.push(event.type);
    assert.ok(event.sequence_number > sequence, 'sequence numbers increase');
    sequence = event.sequence_number;
    if (event.type === 'response.output_text.delta') streamed += event.delta;
    if (event.type === 'response.completed') completed = event.response;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.ok(types.includes('response.output_text.done'));
  assert.equal(streamed, text);
  assert.ok(completed, 'a response.completed event');
  assert.deepEqual(completed.usage, usage);
});

test('files: upload, list, retrieve, download and delete', async () => {
  const bytes = Buffer.from('{"custom_id": "1", "body": {"prompt": "hello"}}\n');
  const file = await client().files.create({ file: await toFile(bytes, 'batch.jsonl'), purpose: 'batch' });
  assert.match(file.id, /^file-/);
  assert.equal(file.object, 'file');
  assert.equal(file.bytes, bytes.length);
  assert.equal(file.filename, 'batch.jsonl');
  assert.equal(file.purpose, 'batch');

  const listed = [];
  for await (const f of client().files.list()) listed.push(f.id);
  assert.ok(listed.includes(file.id), `${listed}`);

  const retrieved = await client().files.retrieve(file.id);
  assert.equal(retrieved.id, file.id);
  const content = await client().files.content(file.id);
  assert.deepEqual(Buffer.from(await content.arrayBuffer()), bytes);

  const deleted = await client().files.delete(file.id);
  assert.deepEqual({ id: deleted.id, deleted: deleted.deleted }, { id: file.id, deleted: true });
  await assert.rejects(client().files.retrieve(file.id), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, `${err}`);
    return true;
  });
});
