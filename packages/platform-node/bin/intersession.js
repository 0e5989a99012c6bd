#!/usr/bin/env node
// The `intersession` program: the package's compiled JavaScript, run by plain node.
import "../dist/bin.js"
