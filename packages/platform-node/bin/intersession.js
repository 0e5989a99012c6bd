#!/usr/bin/env node
// The `intersession` program. The package ships TypeScript sources (there is no build step yet): tsx runs them.
import { register } from "tsx/esm/api"

register()
await import("../src/bin.ts")
