// Run inside a consumer project: every module each installed @intersession package exports must load under plain
// node, and have its type declarations and maps; a bin must exist; internals stay closed. Exits non-zero, naming
// what is missing.
import { existsSync, readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"

const missing = []
const packages = process.argv.slice(2)
for (const name of packages) {
  const root = join("node_modules", name)
  const manifest = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
  // Every module but the program's entry point (`bin`, run by the bin script) and the suites, which load only under
  // vitest (a test of the consumer would import them).
  const modules = readdirSync(join(root, "dist"))
    .filter((file) => file.endsWith(".js"))
    .map((file) => file.slice(0, -3))
  const loadable = (module) => module !== "bin" && !module.endsWith("Suite")
  for (const module of modules) {
    const specifier = module === "index" ? name : `${name}/${module}`
    for (const file of [`dist/${module}.js`, `dist/${module}.d.ts`, `dist/${module}.js.map`, `dist/${module}.d.ts.map`]) {
      if (!existsSync(join(root, file))) missing.push(`${name}: ${file}`)
    }
    if (!loadable(module)) continue
    try {
      await import(specifier)
    } catch (error) {
      missing.push(`${specifier} does not load: ${error.message}`)
    }
  }
  for (const bin of Object.values(manifest.bin ?? {})) {
    if (!existsSync(join(root, bin))) missing.push(`${name}: bin ${bin}`)
  }
  // Internals stay closed.
  try {
    await import(`${name}/internal/anything`)
    missing.push(`${name}/internal/* is open`)
  } catch (error) {
    if (error.code !== "ERR_PACKAGE_PATH_NOT_EXPORTED") missing.push(`${name}/internal/*: ${error.message}`)
  }
  console.log(`${name}@${manifest.version}: ${modules.filter(loadable).length} of ${modules.length} modules load, all with declarations and maps`)
}
if (missing.length > 0) {
  console.error(`missing from the packages:\n  ${missing.join("\n  ")}`)
  process.exit(1)
}
