/**
 * The adapter registry of a server (vLLM's LoRA manager): which adapter names are known (from
 * `--adapter`, `POST /v1/load_lora_adapter`, or folders under `--adapter-root` on first use),
 * which are resident in host memory (at most `maxCpuLoras`, least recently used evicted first,
 * pinned ones never), and how many distinct adapters running requests use (at most `maxLoras`;
 * a request on one more adapter waits for a slot). A request holds a lease on the instance it
 * started with: unloading or reloading a name in place never changes the weights of requests in
 * flight, and the old instance leaves memory when its last request ends.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { AdapterStateError, RequestAbortedError, UnknownModelError } from "../errors.js";
import { validateAdapterName } from "../io/peft-files.js";
import { resolveAdapterPath } from "./adapter-paths.js";
import type { ServeMetrics } from "./metrics.js";

/** What the registry drives: the model side that holds adapter weights under internal ids. */
export interface AdapterHost {
  /** Reads and checks an adapter folder and makes it usable as `id`; on failure nothing changes. */
  load(dir: string, id: string): void | Promise<void>;
  /** Frees `id` (no request uses it any more). */
  unload(id: string): void | Promise<void>;
}

export interface AdapterRegistryOptions {
  /** Distinct adapters in the running batch (vLLM `--max-loras`). */
  readonly maxLoras: number;
  /** Adapters resident in host memory (vLLM `--max-cpu-loras`); at least `maxLoras`. */
  readonly maxCpuLoras: number;
  /** Real path of `--adapter-root`, or null (no loading at run time). */
  readonly root: string | null;
  readonly metrics?: ServeMetrics;
}

/** One adapter as `GET /v1/models` shows it. */
export interface AdapterInfo {
  readonly name: string;
  readonly path: string;
  readonly pinned: boolean;
  readonly resident: boolean;
  readonly created: number;
}

/** A running request's hold on one adapter instance (`id` is what the host knows it as). */
export interface Lease {
  readonly name: string;
  readonly id: string;
  release(): void;
}

interface Instance {
  readonly id: string;
  readonly name: string;
  refs: number;
  /** Holds that keep it resident without counting as a running adapter (sources of a composition). */
  holds: number;
  lastUsed: number;
  /** False once unloaded or replaced: the instance goes when its last lease ends. */
  current: boolean;
  ready: Promise<void>;
}

interface Entry {
  readonly name: string;
  /** The adapter folder, or a description of how `build` makes it. */
  readonly path: string;
  /** Makes the adapter in the host under an id (composed adapters); folders are read with `host.load`. */
  readonly build?: (id: string) => void | Promise<void>;
  /** Hidden from `list()` (per-request compositions). */
  readonly hidden?: boolean;
  /** Adapters a built one is made from (it is forgotten when one of them is reloaded or unloaded). */
  readonly sources?: readonly string[];
  pinned: boolean;
  readonly created: number;
  instance: Instance | null;
}

export class AdapterRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly instances = new Map<string, Instance>();
  private slotWaiters: (() => void)[] = [];
  private counter = 0;
  private readonly loaded = new Set<string>();
  private clock = 0;

  constructor(
    private readonly host: AdapterHost,
    private readonly opts: AdapterRegistryOptions,
  ) {
    if (opts.maxLoras < 1 || opts.maxCpuLoras < opts.maxLoras) {
      throw new AdapterStateError("--max-cpu-loras", `must be at least --max-loras (${opts.maxLoras}) and --max-loras at least 1, got ${opts.maxCpuLoras}`);
    }
  }

  /** Registers a trusted adapter folder (from the command line); it is read on first use. */
  add(name: string, path: string, opts: { pinned?: boolean } = {}): void {
    validateAdapterName(name);
    if (this.entries.has(name)) throw new AdapterStateError(name, "given twice; each --adapter needs its own name");
    if (opts.pinned) this.checkPinRoom(name);
    this.entries.set(name, { name, path: resolve(path), pinned: opts.pinned ?? false, created: Math.floor(Date.now() / 1000), instance: null });
  }

  /** Known adapter names (not those under the root that were never used). */
  names(): string[] {
    return [...this.entries.values()].filter((e) => !e.hidden).map((e) => e.name);
  }

  /**
   * Registers an adapter made in the host by `build(id)` (a per-request composition), hidden from
   * listings, evicted and rebuilt like any other. No-op when `name` is known.
   */
  addBuilt(name: string, description: string, sources: readonly string[], build: (id: string) => void | Promise<void>): void {
    if (this.entries.has(name)) return;
    this.entries.set(name, { name, path: description, build, sources, hidden: true, pinned: false, created: Math.floor(Date.now() / 1000), instance: null });
  }

  /** Forgets the built adapters made from `name` (its weights changed or it is gone). */
  private forgetBuiltFrom(name: string): void {
    for (const e of [...this.entries.values()]) {
      if (!e.sources?.includes(name)) continue;
      this.entries.delete(e.name);
      if (e.instance) this.detach(e.instance);
    }
  }

  list(): AdapterInfo[] {
    return [...this.entries.values()].filter((e) => !e.hidden).map((e) => ({ name: e.name, path: e.path, pinned: e.pinned, resident: e.instance !== null, created: e.created }));
  }

  /** True when `name` is known, or names an adapter folder directly under the adapter root. */
  has(name: string): boolean {
    return this.entries.has(name) || this.rootFolder(name) !== null;
  }

  /** Adapters resident in host memory (current and replaced-but-still-running ones). */
  get residentCount(): number {
    return this.instances.size;
  }

  /** Distinct adapter instances running requests use (or that are being loaded for one). */
  get runningCount(): number {
    let n = 0;
    for (const i of this.instances.values()) if (i.refs > 0) n++;
    return n;
  }

  private rootFolder(name: string): string | null {
    if (this.opts.root === null) return null;
    try {
      validateAdapterName(name);
    } catch {
      return null;
    }
    const dir = join(this.opts.root, name);
    if (!existsSync(join(dir, "adapter_config.json"))) return null;
    try {
      return resolveAdapterPath(this.opts.root, name);
    } catch {
      return null; // e.g. a symbolic link out of the root: not an adapter this server may serve
    }
  }

  private entry(name: string, known: () => string[]): Entry {
    let e = this.entries.get(name);
    if (!e) {
      const dir = this.rootFolder(name);
      if (dir === null) throw new UnknownModelError(name, known());
      e = { name, path: dir, pinned: false, created: Math.floor(Date.now() / 1000), instance: null };
      this.entries.set(name, e);
    }
    return e;
  }

  /**
   * `POST /v1/load_lora_adapter`: reads `path` (confined to the adapter root) as `name` now, so a
   * broken folder is reported at once. An existing name needs `inplace`; requests running on the
   * old weights finish on them.
   */
  async load(name: string, path: string, opts: { inplace?: boolean; pinned?: boolean } = {}): Promise<AdapterInfo> {
    validateAdapterName(name);
    const real = resolveAdapterPath(this.opts.root, path);
    const old = this.entries.get(name);
    if (old && !opts.inplace) throw new AdapterStateError(name, "is already loaded; unload it first or pass load_inplace: true to replace its weights");
    const pinned = opts.pinned ?? old?.pinned ?? false;
    if (pinned && !old?.pinned) this.checkPinRoom(name);
    const inst = this.materialise(name, { path: real }, 0);
    await this.settle(inst);
    const entry: Entry = { name, path: real, pinned, created: old?.created ?? Math.floor(Date.now() / 1000), instance: inst };
    if (old?.instance) this.detach(old.instance);
    this.entries.set(name, entry);
    if (old) this.forgetBuiltFrom(name);
    return { name, path: real, pinned, resident: true, created: entry.created };
  }

  /** `POST /v1/unload_lora_adapter`: forgets `name`; running requests on it finish first. */
  unload(name: string): void {
    const e = this.entries.get(name);
    if (!e) throw new UnknownModelError(name, this.names());
    this.entries.delete(name);
    if (e.instance) this.detach(e.instance);
    this.forgetBuiltFrom(name);
  }

  private checkPinRoom(name: string): void {
    const pinned = [...this.entries.values()].filter((e) => e.pinned).length;
    if (pinned + 1 + this.opts.maxLoras > this.opts.maxCpuLoras) {
      throw new AdapterStateError(name, `cannot be pinned: ${pinned} adapters are pinned and --max-cpu-loras ${this.opts.maxCpuLoras} must keep room for --max-loras ${this.opts.maxLoras} others`);
    }
  }

  /**
   * Starts reading `dir` into a new resident instance with `refs` leases (evicting the least
   * recently used one if host memory is full); `settle` awaits it.
   */
  private materialise(name: string, source: { readonly path: string; readonly build?: (id: string) => void | Promise<void> }, refs: number, holds = 0): Instance {
    this.makeRoom(name);
    const id = `a${++this.counter}`;
    const inst: Instance = { id, name, refs, holds, lastUsed: ++this.clock, current: true, ready: Promise.resolve() };
    this.instances.set(id, inst);
    inst.ready = (async () => {
      if (source.build) await source.build(id);
      else await this.host.load(source.path, id);
    })();
    return inst;
  }

  /** Waits for an instance's load; a failed load leaves no trace (and frees its slot). */
  private async settle(inst: Instance): Promise<void> {
    try {
      await inst.ready;
    } catch (e) {
      if (this.instances.get(inst.id) === inst) {
        this.instances.delete(inst.id);
        const e2 = this.entries.get(inst.name);
        if (e2?.instance === inst) e2.instance = null;
        this.wakeSlotWaiters();
      }
      throw e;
    }
    if (!this.loaded.has(inst.id)) {
      this.loaded.add(inst.id);
      this.opts.metrics?.adapterLoads.inc();
      this.opts.metrics?.adapterResident.set({ adapter: inst.name }, 1);
    }
  }

  private makeRoom(forName: string): void {
    while (this.instances.size >= this.opts.maxCpuLoras) {
      let victim: Instance | null = null;
      for (const i of this.instances.values()) {
        if (i.refs > 0 || i.holds > 0 || !i.current || !this.loaded.has(i.id)) continue;
        if (this.entries.get(i.name)?.pinned) continue;
        if (!victim || i.lastUsed < victim.lastUsed) victim = i;
      }
      if (!victim) throw new AdapterStateError(forName, `cannot be loaded: all ${this.opts.maxCpuLoras} resident adapters (--max-cpu-loras) are pinned or in use`);
      const e = this.entries.get(victim.name);
      if (e) e.instance = null;
      this.drop(victim);
      this.opts.metrics?.evictions.inc();
    }
  }

  private detach(inst: Instance): void {
    inst.current = false;
    if (inst.refs === 0 && inst.holds === 0) this.drop(inst);
  }

  private drop(inst: Instance): void {
    this.instances.delete(inst.id);
    this.loaded.delete(inst.id);
    const stillResident = [...this.instances.values()].some((i) => i.name === inst.name);
    if (!stillResident) this.opts.metrics?.adapterResident.remove({ adapter: inst.name });
    void Promise.resolve(this.host.unload(inst.id));
  }

  private wakeSlotWaiters(): void {
    for (const w of this.slotWaiters.splice(0)) w();
  }

  private async waitForSlot(signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(new RequestAbortedError("a request waiting for an adapter slot"));
        return;
      }
      const w = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = () => {
        this.slotWaiters = this.slotWaiters.filter((x) => x !== w);
        reject(new RequestAbortedError("a request waiting for an adapter slot"));
      };
      this.slotWaiters.push(w);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /**
   * A lease on the current instance of adapter `name`, read from disk if it is not resident.
   * Waits while `maxLoras` other adapters are running. `known` lists model names for errors.
   */
  async acquire(name: string, opts: { signal?: AbortSignal; known?: () => string[] } = {}): Promise<Lease> {
    const known = opts.known ?? (() => this.names());
    for (;;) {
      if (opts.signal?.aborted) throw new RequestAbortedError("a request waiting for an adapter");
      const e = this.entry(name, known);
      let inst = e.instance;
      if ((inst && inst.refs > 0) || this.runningCount < this.opts.maxLoras) {
        if (inst) inst.refs++;
        else {
          inst = this.materialise(name, e, 1);
          e.instance = inst; // concurrent requests for the same name share this load
        }
        inst.lastUsed = ++this.clock;
        try {
          await this.settle(inst);
        } catch (err) {
          this.release(inst, "refs");
          throw err;
        }
        return this.leaseOf(inst, "refs");
      }
      await this.waitForSlot(opts.signal);
    }
  }

  /**
   * Keeps adapter `name` resident (read if needed) without taking a running slot: the sources of
   * a composition are read, combined into a new adapter and let go.
   */
  async hold(name: string, known: () => string[] = () => this.names()): Promise<Lease> {
    const e = this.entry(name, known);
    let inst = e.instance;
    if (inst) inst.holds++;
    else {
      inst = this.materialise(name, e, 0, 1);
      e.instance = inst;
    }
    inst.lastUsed = ++this.clock;
    try {
      await this.settle(inst);
    } catch (err) {
      this.release(inst, "holds");
      throw err;
    }
    return this.leaseOf(inst, "holds");
  }

  private release(inst: Instance, kind: "refs" | "holds"): void {
    inst[kind]--;
    inst.lastUsed = ++this.clock;
    if (inst.refs === 0 && inst.holds === 0) {
      if (!inst.current && this.instances.get(inst.id) === inst) this.drop(inst);
      this.wakeSlotWaiters();
    }
  }

  private leaseOf(inst: Instance, kind: "refs" | "holds"): Lease {
    let released = false;
    return {
      name: inst.name,
      id: inst.id,
      release: () => {
        if (released) return;
        released = true;
        this.release(inst, kind);
      },
    };
  }
}
