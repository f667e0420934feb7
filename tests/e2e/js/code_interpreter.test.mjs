// The newest `@e2b/code-interpreter` (package.json) through the shared suite.
import { codeInterpreterSuite } from './code_interpreter.suite.mjs'

await codeInterpreterSuite('@e2b/code-interpreter')
