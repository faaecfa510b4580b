/**
 * `npm run bench -- <name> [options]`: runs one benchmark, which prints ONE JSON line (figures
 * plus environment) on stdout; progress goes to stderr. Each benchmark is a file in this folder
 * exporting `register(program)`; add it with one import and one entry in `BENCHMARKS`.
 */
import { Command } from "commander";
import { createContext, processIo } from "../src/cli/context.js";
import { reportError } from "../src/cli/main.js";
import * as coserve from "./coserve.js";
import * as generate from "./generate.js";
import * as browser from "./browser.js";
import * as infer from "./infer.js";
import * as matmul from "./matmul.js";
import * as memory from "./memory.js";
import * as methods from "./methods.js";
import * as searchCompare from "./search-compare.js";
import * as placement from "./placement.js";
import * as serve from "./serve.js";
import * as trainStep from "./train-step.js";
import * as variants from "./variants.js";
import * as variantsCnn from "./variants-cnn.js";

export const BENCHMARKS: readonly { register(program: Command): void }[] = [matmul, trainStep, infer, generate, memory, placement, serve, coserve, browser, methods, searchCompare, variants, variantsCnn];

export async function benchMain(argv: string[]): Promise<void> {
  const io = processIo();
  const program = new Command("bench")
    .description("peft-ts benchmarks: each prints one JSON line with its figures and environment")
    .exitOverride()
    .showHelpAfterError("(run 'npm run bench -- --help' for the list)");
  for (const b of BENCHMARKS) b.register(program);
  try {
    await program.parseAsync(argv, { from: "node" });
  } catch (e) {
    io.setExitCode(reportError(e, createContext(io)));
  }
}

await benchMain(process.argv);
