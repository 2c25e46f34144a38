#!/usr/bin/env node
/**
 * A minimal stand-in for Pulumi's Node.js language host (`pulumi-language-nodejs`), used by
 * scripts/build-pulumi.sh only when the real one cannot be built: its Go module
 * (github.com/pulumi/pulumi/sdk/nodejs/cmd/pulumi-language-nodejs/v3) is not served by every Go module
 * proxy. The Pulumi CLI, its engine, state, secrets and the dynamic provider plugin stay the real ones.
 *
 * It does what the real host does for `pulumi up/preview/refresh/destroy` of a Node.js program: serves the
 * LanguageRuntime gRPC service, prints its port, and for Run starts the project's own
 * `@pulumi/pulumi/cmd/run` with the same flags and environment (PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS,
 * PULUMI_NODEJS_TYPESCRIPT …); GetRequiredPackages lists the resource plugins of the installed npm packages
 * (package.json "pulumi": {"resource": true}), as the real host does. Nothing else (no `pulumi new`,
 * `pulumi convert`, `pulumi install`, packaging or debugging).
 */
"use strict";
const { spawn } = require("child_process");
const fs = require("fs");
const path = require("path");

const repo = path.resolve(__dirname, "..");
const fromRepo = (m) => require(require.resolve(m, { paths: [repo] }));
const grpc = fromRepo("@grpc/grpc-js");
const langpb = fromRepo("@pulumi/pulumi/proto/language_pb");
const langrpc = fromRepo("@pulumi/pulumi/proto/language_grpc_pb");
const pluginpb = fromRepo("@pulumi/pulumi/proto/plugin_pb");
const { Empty } = fromRepo("google-protobuf/google/protobuf/empty_pb");
const SDK_VERSION = fromRepo("@pulumi/pulumi/package.json").version;

// The engine passes its own address as the last argument.
const engineAddress = process.argv[process.argv.length - 1];

/** Resource plugins the program needs: npm packages whose package.json says "pulumi": {"resource": true}. */
function requiredPlugins(dir) {
  const found = new Map();
  const visit = (pkgDir) => {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8"));
      const p = pkg.pulumi;
      if (p && p.resource) {
        const name = p.name || pkg.name.replace(/^@pulumi\//, "");
        found.set(name, { name, version: p.version || pkg.version, server: p.server || "" });
      }
    } catch { /* not a package */ }
  };
  for (let d = dir; ; d = path.dirname(d)) {
    const nm = path.join(d, "node_modules");
    if (fs.existsSync(nm)) {
      for (const e of fs.readdirSync(nm)) {
        if (e.startsWith("@")) for (const s of fs.readdirSync(path.join(nm, e))) visit(path.join(nm, e, s));
        else visit(path.join(nm, e));
      }
      break;
    }
    if (path.dirname(d) === d) break;
  }
  return [...found.values()];
}

const service = {
  handshake(_call, cb) { cb(null, new langpb.LanguageHandshakeResponse()); },
  getPluginInfo(_call, cb) { cb(null, new pluginpb.PluginInfo().setVersion(SDK_VERSION)); },
  getRequiredPlugins(call, cb) {
    const info = call.request.getInfo();
    const plugins = requiredPlugins(info ? info.getProgramDirectory() : call.request.getPwd()).map((p) =>
      new pluginpb.PluginDependency().setName(p.name).setKind("resource").setVersion(p.version).setServer(p.server));
    cb(null, new langpb.GetRequiredPluginsResponse().setPluginsList(plugins));
  },
  getRequiredPackages(call, cb) {
    const plugins = requiredPlugins(call.request.getInfo().getProgramDirectory()).map((p) =>
      new pluginpb.PackageDependency().setName(p.name).setKind("resource").setVersion(p.version).setServer(p.server));
    cb(null, new langpb.GetRequiredPackagesResponse().setPackagesList(plugins));
  },
  cancel(_call, cb) { cb(null, new Empty()); },
  run(call, cb) {
    const r = call.request;
    const info = r.getInfo();
    const programDir = info ? info.getProgramDirectory() : r.getPwd();
    const options = info && info.getOptions() ? info.getOptions().toJavaScript() : {};
    let runScript;
    try {
      runScript = require.resolve("@pulumi/pulumi/cmd/run", { paths: [programDir] });
    } catch {
      return cb(null, new langpb.RunResponse().setError(
        `It looks like the Pulumi SDK has not been installed. Have you run npm install or yarn install? (no @pulumi/pulumi from ${programDir})`));
    }
    const args = [runScript];
    const flag = (k, v) => { if (v) args.push(`--${k}`, String(v)); };
    flag("monitor", r.getMonitorAddress());
    flag("engine", engineAddress);
    flag("organization", r.getOrganization());
    flag("project", r.getProject());
    flag("stack", r.getStack());
    flag("pwd", r.getPwd());
    if (r.getDryrun()) args.push("--dry-run");
    if (r.getQuerymode()) args.push("--query-mode");
    if (r.getParallel() > 0) flag("parallel", r.getParallel());
    // As the real host: the entry point as given ("." = the program directory's package.json "main"), relative to pwd.
    args.push((info && info.getEntryPoint()) || r.getProgram() || ".");
    args.push(...r.getArgsList());

    const config = {};
    r.getConfigMap().forEach((v, k) => { config[k] = v; });
    const env = {
      ...process.env,
      PULUMI_CONFIG: JSON.stringify(config),
      PULUMI_CONFIG_SECRET_KEYS: JSON.stringify(r.getConfigsecretkeysList()),
      // The real host's defaults: TypeScript on unless `runtime.options.typescript: false`.
      PULUMI_NODEJS_TYPESCRIPT: String(options.typescript !== false),
    };
    if (options.tsconfig) env.PULUMI_NODEJS_TSCONFIG_PATH = options.tsconfig;
    const nodeargs = typeof options.nodeargs === "string" ? options.nodeargs.split(/\s+/).filter(Boolean) : [];
    if (process.env.PGFERRY_LANGHOST_DEBUG) console.error(`pulumi-language-nodejs stand-in: cwd ${r.getPwd() || programDir}, node ${args.join(" ")}`);
    const child = spawn(process.execPath, [...nodeargs, ...args], { cwd: r.getPwd() || programDir, env, stdio: ["ignore", "inherit", "inherit"] });
    child.on("error", (e) => cb(null, new langpb.RunResponse().setError(`could not start node: ${e.message}`)));
    child.on("exit", (code, signal) => {
      const res = new langpb.RunResponse();
      // 32: the program already reported its error to the engine (the SDK's "bail" exit code).
      if (code === 32) res.setBail(true);
      else if (code !== 0) res.setError(signal ? `Program exited with signal ${signal}` : `Program exited with non-zero exit code: ${code}`);
      cb(null, res);
    });
  },
};

const server = new grpc.Server({ "grpc.max_receive_message_length": 400 * 1024 * 1024 });
server.addService(langrpc.LanguageRuntimeService, service);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) { console.error(err.message); process.exit(1); }
  // The engine reads the port from the first line of stdout.
  process.stdout.write(`${port}\n`);
});
