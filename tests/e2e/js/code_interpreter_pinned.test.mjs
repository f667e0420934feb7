// A pinned older `@e2b/code-interpreter` (the npm alias `code-interpreter-pinned` in package.json, on the `e2b`
// its override names) through the same suite as the newest. 2.7.0 is the oldest release that reaches the
// sandbox's port 49999 through E2B_SANDBOX_URL (`getSandboxDirectUrl`); earlier ones always call
// https://49999-<id>.<domain>, which needs DNS and TLS for the domain (README "TLS and domains"), not part of
// this suite. It has every API the suite uses (createCodeContext, list/restart/removeCodeContext).
import { codeInterpreterSuite } from './code_interpreter.suite.mjs'

await codeInterpreterSuite('code-interpreter-pinned')
