/** Elementwise arithmetic and activations, each with its gradient rule. */
import type { OpName } from "./names.js";
import * as G from "../api.js";
import { nonDifferentiable, type OpDef } from "../op-def.js";
import { broadcastShapes } from "../shape.js";
import { arity, broadcastInfer, sameDtype, unaryInfer } from "./common.js";

export const elementwiseOps = {
  Add: { type: "Add", attrs: {}, infer: broadcastInfer("Add"), vjp: (_g, _n, [dy]) => [dy!, dy!] },
  Sub: { type: "Sub", attrs: {}, infer: broadcastInfer("Sub"), vjp: (_g, _n, [dy]) => [dy!, G.neg(dy!)] },
  Mul: {
    type: "Mul",
    attrs: {},
    infer: broadcastInfer("Mul"),
    vjp: (_g, n, [dy]) => [G.mul(dy!, n.inputs[1]!), G.mul(dy!, n.inputs[0]!)],
  },
  Div: {
    type: "Div",
    attrs: {},
    // d(a/b)/da = 1/b; d(a/b)/db = -(a/b)/b
    vjp: (_g, n, [dy]) => {
      const [, b] = n.inputs;
      const da = G.div(dy!, b!);
      return [da, G.neg(G.mul(da, n.outputs[0]!))];
    },
    infer: broadcastInfer("Div"),
  },
  Pow: {
    type: "Pow",
    attrs: {},
    infer: broadcastInfer("Pow"),
    // d(x^p)/dx = p·x^(p-1); d(x^p)/dp = x^p·ln x
    vjp: (_g, n, [dy]) => {
      const [x, p] = n.inputs;
      const dx = G.mul(dy!, G.mul(p!, G.pow(x!, G.sub(p!, 1))));
      const dp = p!.kind === "initializer" ? null : G.mul(dy!, G.mul(n.outputs[0]!, G.log(x!)));
      return [dx, dp];
    },
  },
  Max: {
    type: "Max",
    attrs: {},
    infer: broadcastInfer("Max"),
    // ties send the gradient to the first input, as a subgradient
    vjp: (_g, n, [dy]) => {
      const [a, b] = n.inputs;
      const aWins = G.not(G.less(a!, b!));
      return [G.where(aWins, dy!, 0), G.where(aWins, 0, dy!)];
    },
  },
  Min: {
    type: "Min",
    attrs: {},
    infer: broadcastInfer("Min"),
    vjp: (_g, n, [dy]) => {
      const [a, b] = n.inputs;
      const aWins = G.not(G.greater(a!, b!));
      return [G.where(aWins, dy!, 0), G.where(aWins, 0, dy!)];
    },
  },
  Neg: { type: "Neg", attrs: {}, infer: unaryInfer("Neg"), vjp: (_g, _n, [dy]) => [G.neg(dy!)] },
  Identity: { type: "Identity", attrs: {}, infer: unaryInfer("Identity"), vjp: (_g, _n, [dy]) => [dy!] },
  Sqrt: { type: "Sqrt", attrs: {}, infer: unaryInfer("Sqrt"), vjp: (_g, n, [dy]) => [G.div(G.mul(dy!, 0.5), n.outputs[0]!)] },
  Reciprocal: {
    type: "Reciprocal",
    attrs: {},
    infer: unaryInfer("Reciprocal"),
    vjp: (_g, n, [dy]) => {
      const y = n.outputs[0]!;
      return [G.neg(G.mul(dy!, G.mul(y, y)))];
    },
  },
  Exp: { type: "Exp", attrs: {}, infer: unaryInfer("Exp"), vjp: (_g, n, [dy]) => [G.mul(dy!, n.outputs[0]!)] },
  Log: { type: "Log", attrs: {}, infer: unaryInfer("Log"), vjp: (_g, n, [dy]) => [G.div(dy!, n.inputs[0]!)] },
  Tanh: {
    type: "Tanh",
    attrs: {},
    infer: unaryInfer("Tanh"),
    vjp: (_g, n, [dy]) => {
      const y = n.outputs[0]!;
      return [G.mul(dy!, G.sub(1, G.mul(y, y)))];
    },
  },
  Erf: {
    type: "Erf",
    attrs: {},
    infer: unaryInfer("Erf"),
    // d erf(x)/dx = 2/√π · exp(−x²)
    vjp: (_g, n, [dy]) => {
      const x = n.inputs[0]!;
      return [G.mul(dy!, G.mul(G.exp(G.neg(G.mul(x, x))), 2 / Math.sqrt(Math.PI)))];
    },
  },
  Sigmoid: {
    type: "Sigmoid",
    attrs: {},
    infer: unaryInfer("Sigmoid"),
    vjp: (_g, n, [dy]) => {
      const y = n.outputs[0]!;
      return [G.mul(dy!, G.mul(y, G.sub(1, y)))];
    },
  },
  Relu: {
    type: "Relu",
    attrs: {},
    infer: unaryInfer("Relu"),
    vjp: (_g, n, [dy]) => [G.where(G.greater(n.inputs[0]!, 0), dy!, 0)],
  },
  Abs: { type: "Abs", attrs: {}, infer: unaryInfer("Abs"), vjp: (_g, n, [dy]) => [G.mul(dy!, G.sign(n.inputs[0]!))] },
  Sign: { type: "Sign", attrs: {}, infer: unaryInfer("Sign"), vjp: nonDifferentiable },
  Cos: { type: "Cos", attrs: {}, infer: unaryInfer("Cos"), vjp: (_g, n, [dy]) => [G.neg(G.mul(dy!, G.sin(n.inputs[0]!)))] },
  Sin: { type: "Sin", attrs: {}, infer: unaryInfer("Sin"), vjp: (_g, n, [dy]) => [G.mul(dy!, G.cos(n.inputs[0]!))] },
  Equal: { type: "Equal", attrs: {}, infer: broadcastInfer("Equal", "bool"), vjp: nonDifferentiable },
  Less: { type: "Less", attrs: {}, infer: broadcastInfer("Less", "bool"), vjp: nonDifferentiable },
  Greater: { type: "Greater", attrs: {}, infer: broadcastInfer("Greater", "bool"), vjp: nonDifferentiable },
  Not: { type: "Not", attrs: {}, infer: unaryInfer("Not"), vjp: nonDifferentiable },
  And: { type: "And", attrs: {}, infer: broadcastInfer("And", "bool"), vjp: nonDifferentiable },
  Where: {
    type: "Where",
    attrs: {},
    infer: (inputs) => {
      arity("Where", inputs, 3);
      const [c, a, b] = inputs;
      sameDtype("Where", [a!, b!]);
      return [{ dtype: a!.dtype, shape: broadcastShapes("Where", broadcastShapes("Where", c!.shape, a!.shape), b!.shape) }];
    },
    vjp: (_g, n, [dy]) => {
      const c = n.inputs[0]!;
      return [null, G.where(c, dy!, 0), G.where(c, 0, dy!)];
    },
  },
} satisfies Partial<Record<OpName, OpDef>>;
