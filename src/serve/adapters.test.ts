/** The adapter registry's policy with a recording fake host: LRU eviction, pins, --max-loras slots, leases across reloads. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { AdapterStateError, RequestAbortedError } from "../errors.js";
import { type AdapterHost, AdapterRegistry } from "./adapters.js";

class FakeHost implements AdapterHost {
  readonly live = new Map<string, string>();
  readonly log: string[] = [];
  load(dir: string, id: string): void {
    if (dir.endsWith("broken")) throw new AdapterStateError(id, "broken on purpose");
    this.live.set(id, dir);
    this.log.push(`load ${id} ${dir.split("/").pop()}`);
  }
  unload(id: string): void {
    this.live.delete(id);
    this.log.push(`unload ${id}`);
  }
}

describe("AdapterRegistry", () => {
  const tmp = mkdtempSync(join(tmpdir(), "peft-registry-"));
  for (const n of ["a", "b", "c", "d", "broken"]) {
    mkdirSync(join(tmp, n));
    writeFileSync(join(tmp, n, "adapter_config.json"), "{}");
  }
  after(() => rmSync(tmp, { recursive: true, force: true }));

  test("host memory holds at most maxCpuLoras adapters; the least recently used idle one goes", async () => {
    const host = new FakeHost();
    const reg = new AdapterRegistry(host, { maxLoras: 1, maxCpuLoras: 2, root: tmp });
    for (const n of ["a", "b", "a", "c"]) (await reg.acquire(n)).release();
    // a was used after b, so b is evicted when c arrives
    assert.deepEqual([...host.live.values()].map((d) => d.split("/").pop()).sort(), ["a", "c"]);
    assert.equal(reg.residentCount, 2);
    (await reg.acquire("b")).release(); // read again on use
    assert.deepEqual([...host.live.values()].map((d) => d.split("/").pop()).sort(), ["b", "c"]);
  });

  test("pinned adapters are never evicted; pins must leave room for maxLoras others", async () => {
    const host = new FakeHost();
    const reg = new AdapterRegistry(host, { maxLoras: 1, maxCpuLoras: 2, root: tmp });
    await reg.load("pinned", "a", { pinned: true });
    for (const n of ["b", "c", "d"]) (await reg.acquire(n)).release();
    assert.ok([...host.live.values()].some((d) => d.endsWith("/a")));
    await assert.rejects(reg.load("second", "b", { pinned: true }), AdapterStateError);
  });

  test("at most maxLoras distinct adapters run at once; a waiting request can be aborted", async () => {
    const reg = new AdapterRegistry(new FakeHost(), { maxLoras: 2, maxCpuLoras: 4, root: tmp });
    const la = await reg.acquire("a");
    const la2 = await reg.acquire("a"); // same adapter: no new slot
    const lb = await reg.acquire("b");
    assert.equal(reg.runningCount, 2);
    let got = false;
    const pc = reg.acquire("c").then((l) => {
      got = true;
      return l;
    });
    const ac = new AbortController();
    const pd = reg.acquire("d", { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, false);
    ac.abort();
    await assert.rejects(pd, RequestAbortedError);
    la.release();
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(got, false, "a still runs (second lease)");
    la2.release();
    const lc = await pc;
    assert.equal(lc.name, "c");
    assert.equal(reg.runningCount, 2);
    lb.release();
    lc.release();
    assert.equal(reg.runningCount, 0);
  });

  test("a lease keeps the weights it started with across reload and unload; the old copy goes with its last lease", async () => {
    const host = new FakeHost();
    const reg = new AdapterRegistry(host, { maxLoras: 2, maxCpuLoras: 4, root: tmp });
    await reg.load("x", "a");
    const old = await reg.acquire("x");
    await reg.load("x", "b", { inplace: true });
    const fresh = await reg.acquire("x");
    assert.notEqual(old.id, fresh.id);
    assert.ok(host.live.get(old.id)!.endsWith("/a"));
    assert.ok(host.live.get(fresh.id)!.endsWith("/b"));
    reg.unload("x");
    assert.ok(host.live.has(old.id) && host.live.has(fresh.id), "running requests keep their instances");
    old.release();
    fresh.release();
    assert.equal(host.live.size, 0);
    assert.deepEqual(reg.names(), []);
  });

  test("a failed load leaves nothing behind and frees its slot", async () => {
    const host = new FakeHost();
    const reg = new AdapterRegistry(host, { maxLoras: 1, maxCpuLoras: 2, root: tmp });
    await assert.rejects(reg.acquire("broken"), AdapterStateError);
    assert.equal(reg.runningCount, 0);
    assert.equal(reg.residentCount, 0);
    (await reg.acquire("a")).release();
  });

  test("built adapters: sources held without a running slot, hidden from the list, forgotten when a source changes", async () => {
    const host = new FakeHost();
    const reg = new AdapterRegistry(host, { maxLoras: 1, maxCpuLoras: 4, root: tmp });
    let builds = 0;
    const build = async (id: string) => {
      const a = await reg.hold("a");
      const b = await reg.hold("b");
      assert.equal(reg.runningCount, 1, "only the built adapter's own lease runs");
      host.live.set(id, `mix of ${a.id} ${b.id}`);
      builds++;
      a.release();
      b.release();
    };
    reg.addBuilt("mix", "a+b", ["a", "b"], build);
    const l1 = await reg.acquire("mix");
    l1.release();
    reg.addBuilt("mix", "a+b", ["a", "b"], build);
    (await reg.acquire("mix")).release();
    assert.equal(builds, 1, "cached by name");
    assert.deepEqual(reg.names(), ["a", "b"]);
    await reg.load("a", "c", { inplace: true });
    assert.equal(reg.has("mix"), false, "a source was reloaded");
    assert.ok(!host.live.has(l1.id));
  });
});
