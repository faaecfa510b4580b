/** What the browser tests share: a small, clearly separable sentiment JSONL (the page's "drop a file" input). */

const GOOD = ["Great product, works perfectly.", "I love it, excellent quality.", "Fantastic, highly recommended.", "Very happy with this purchase.", "Superb and reliable.", "Wonderful, exactly what I wanted.", "Best purchase this year.", "Amazing value, very pleased.", "Excellent, five stars.", "Works great, love it."];
const BAD = ["Terrible, broke after a day.", "I hate it, awful quality.", "Horrible, do not buy.", "Very disappointed with this.", "Useless and unreliable.", "Awful, nothing like described.", "Worst purchase this year.", "Waste of money, very poor.", "Bad, one star.", "Stopped working, hate it."];

/** Clear sentiment, so a few steps visibly lower the loss; 20 rows → 16 train / 2 validation / 2 test. */
export const JSONL = [...GOOD.map((text) => ({ text, label: "positive" })), ...BAD.map((text) => ({ text, label: "negative" }))].map((r) => JSON.stringify(r)).join("\n");
