export {
  CompiledGraph,
  SessionCache,
  sessionCache,
  availableProviders,
  toOrtTensor,
  fromOrtTensor,
  signatureOf,
  type ExecutionProvider,
  type SessionOptions,
  type Feeds,
  type Results,
} from "./session.js";
