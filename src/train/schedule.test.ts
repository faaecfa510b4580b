import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ConfigError } from "../errors.js";
import { createSchedule, warmupStepsFromRatio, type ScheduleConfig } from "./schedule.js";

function near(a: number, b: number, what: string): void {
  assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} vs ${b}`);
}

describe("learning-rate schedules (transformers semantics)", () => {
  test("constant", () => {
    const s = createSchedule({ kind: "constant" }, 2e-4);
    assert.equal(s.lrAt(0), 2e-4);
    assert.equal(s.lrAt(12345), 2e-4);
  });

  test("constant with warm-up", () => {
    const s = createSchedule({ kind: "constantWithWarmup", warmupSteps: 4 }, 1);
    assert.deepEqual([0, 1, 3, 4, 100].map((t) => s.multiplier(t)), [0, 0.25, 0.75, 1, 1]);
  });

  test("linear warm-up then linear decay to 0 (get_linear_schedule_with_warmup)", () => {
    const lr = 5e-5;
    const s = createSchedule({ kind: "linear", warmupSteps: 10, totalSteps: 110 }, lr);
    near(s.lrAt(0), 0, "step 0");
    near(s.lrAt(5), lr * (5 / 10), "mid warm-up");
    near(s.lrAt(9), lr * (9 / 10), "last warm-up step");
    near(s.lrAt(10), lr * ((110 - 10) / 100), "peak");
    near(s.lrAt(60), lr * ((110 - 60) / 100), "half way");
    near(s.lrAt(109), lr * (1 / 100), "last step");
    near(s.lrAt(110), 0, "end");
    near(s.lrAt(200), 0, "past the end clamps at 0");
    // No warm-up: the first step already uses the full rate.
    near(createSchedule({ kind: "linear", warmupSteps: 0, totalSteps: 4 }, 1).multiplier(0), 1, "no warm-up");
  });

  test("linear warm-up then cosine decay (get_cosine_schedule_with_warmup, half a cycle)", () => {
    const s = createSchedule({ kind: "cosine", warmupSteps: 3, totalSteps: 13 }, 1);
    near(s.multiplier(0), 0, "step 0");
    near(s.multiplier(2), 2 / 3, "warm-up");
    near(s.multiplier(3), 1, "peak");
    near(s.multiplier(8), 0.5 * (1 + Math.cos(Math.PI * 0.5)), "half way = 0.5");
    near(s.multiplier(8), 0.5, "half way literal");
    near(s.multiplier(5), 0.5 * (1 + Math.cos(Math.PI * (2 / 10))), "step 5");
    near(s.multiplier(13), 0, "end");
    // A full cycle comes back up at the end; max(0, ·) keeps it non-negative.
    const full = createSchedule({ kind: "cosine", warmupSteps: 0, totalSteps: 10, numCycles: 1 }, 1);
    near(full.multiplier(5), 0, "full cycle trough");
    near(full.multiplier(10), 1, "full cycle end");
  });

  test("warm-up from a ratio rounds up; bad configs are rejected", () => {
    assert.equal(warmupStepsFromRatio(0.1, 95), 10);
    assert.equal(warmupStepsFromRatio(0, 95), 0);
    const bad: ScheduleConfig[] = [
      { kind: "linear", warmupSteps: -1, totalSteps: 10 },
      { kind: "cosine", warmupSteps: 1, totalSteps: 1.5 },
      { kind: "cosine", warmupSteps: 1, totalSteps: 10, numCycles: 0 },
      { kind: "exponential" } as unknown as ScheduleConfig,
    ];
    for (const c of bad) assert.throws(() => createSchedule(c, 1), ConfigError, JSON.stringify(c));
    assert.throws(() => createSchedule({ kind: "constant" }, -1), ConfigError);
    assert.throws(() => createSchedule({ kind: "constant" }, 1).lrAt(-1), ConfigError);
  });
});
