// Validates an AsyncAPI document with the official parser: prints every diagnostic as a JSON
// line, then a summary of what the parsed document holds; exits 1 on any error.
const fs = require('node:fs');
const { Parser } = require('@asyncapi/parser');

(async () => {
  const text = fs.readFileSync(process.argv[2], 'utf8');
  const { document, diagnostics } = await new Parser().parse(text);
  for (const d of diagnostics) {
    console.log(JSON.stringify({ diagnostic: { severity: d.severity, code: d.code, message: d.message, path: d.path } }));
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length > 0) {
    console.log(JSON.stringify({ valid: false, errors: errors.length }));
    process.exit(1);
  }
  const summary = {
    valid: true,
    version: document.version(),
    title: document.info().title(),
    channels: document.channels().all().map((c) => c.address()),
    operations: document.operations().all().map((o) => ({ id: o.id(), action: o.action(), channels: o.channels().all().map((c) => c.address()), messages: o.messages().all().map((m) => m.name()) })),
    messages: document.components().messages().all().map((m) => ({ name: m.name(), payload: m.payload() ? m.payload().json() : null, headers: m.headers() ? Object.keys(m.headers().properties() || {}) : [] })),
  };
  console.log(JSON.stringify({ summary }));
})().catch((e) => {
  console.error(e);
  process.exit(2);
});
