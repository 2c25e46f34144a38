// Drive a Pulumi dynamic provider exactly over the engine's gRPC protocol, without the Pulumi CLI.
// It spawns @pulumi/pulumi/cmd/dynamic-provider (what `pulumi-resource-pulumi-nodejs` runs) and
// calls the ResourceProvider service with the generated stubs shipped inside @pulumi/pulumi.
// (From ../shared/notes/pulumi.md, where it was verified end to end.)
import { ChildProcess, spawn } from "child_process";
import * as grpc from "@grpc/grpc-js";
import * as pulumi from "@pulumi/pulumi";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import * as provproto from "@pulumi/pulumi/proto/provider_pb";
import * as provrpc from "@pulumi/pulumi/proto/provider_grpc_pb";

export type Props = Record<string, any>;
const toStruct = (o: Props) => Struct.fromJavaScript(JSON.parse(JSON.stringify(o))); // drops undefined
const fromStruct = (s?: Struct) => (s ? (s.toJavaScript() as Props) : {});

const SIG = "4dabf18193072939515e22adb298388d", SECRET = "1b47061264138c4ac30d75fd1eb44270";
/** The dynamic provider answers Configure with acceptSecrets=false, so the engine sends secrets as plain
 *  values. Use this on inputs captured from pulumi.runtime.setMocks (which still carry the secret envelope). */
export function unwrapSecrets(v: any): any {
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (v && typeof v === "object") {
    if (v[SIG] === SECRET) return unwrapSecrets(v.value);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrapSecrets(x)]));
  }
  return v;
}

/** What pulumi.dynamic.Resource puts in inputs["__provider"] (see @pulumi/pulumi/dynamic/index.js). */
export async function serializeProvider(provider: pulumi.dynamic.ResourceProvider): Promise<string> {
  return (await pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true })).text;
}

export class DynamicProviderHarness {
  private constructor(private proc: ChildProcess, private client: provrpc.ResourceProviderClient,
                      private providerText: string, private type: string) {}

  /** Spawn the real dynamic-provider gRPC server; it prints its port on stdout. cwd decides how
   *  require() inside the provider resolves (the engine runs it in the Pulumi project dir). */
  static async start(provider: pulumi.dynamic.ResourceProvider | string, opts: { cwd?: string; type?: string; env?: Props } = {}) {
    const entry = require.resolve("@pulumi/pulumi/cmd/dynamic-provider", { paths: [opts.cwd ?? process.cwd()] });
    const proc = spawn(process.execPath, [entry, "127.0.0.1:0" /* engine addr: required, unused */], {
      cwd: opts.cwd ?? process.cwd(), env: { ...process.env, ...opts.env }, stdio: ["ignore", "pipe", "inherit"],
    });
    const port = await new Promise<number>((resolve, reject) => {
      let buf = "";
      proc.stdout!.on("data", (d) => { buf += d; const m = buf.match(/^(\d+)\s*\n/); if (m) resolve(Number(m[1])); });
      proc.once("exit", (c) => reject(new Error(`dynamic-provider exited early (${c})`)));
    });
    const client = new provrpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    const text = typeof provider === "string" ? provider : await serializeProvider(provider);
    return new DynamicProviderHarness(proc, client, text, opts.type ?? "pulumi-nodejs:dynamic:Resource");
  }

  get serializedProvider(): string { return this.providerText; }

  private call<Req, Res>(method: string, req: Req): Promise<Res> {
    return new Promise((resolve, reject) =>
      (this.client as any)[method](req, (err: grpc.ServiceError | null, res: Res) => (err ? reject(err) : resolve(res))));
  }
  private urn(name: string) { return `urn:pulumi:test::proj::${this.type}::${name}`; }
  /** Inputs as the engine sends them: program inputs plus the serialized provider (added when missing). */
  withProvider(inputs: Props): Props { return inputs.__provider ? inputs : { ...inputs, __provider: this.providerText }; }

  /** Engine sends stack config as a flat "project:key" -> string map (Config.get/require read it). */
  async configure(config: Props = {}) {
    const req = new provproto.ConfigureRequest().setArgs(toStruct(config)).setAcceptsecrets(true);
    const res = await this.call<provproto.ConfigureRequest, provproto.ConfigureResponse>("configure", req);
    return { acceptSecrets: res.getAcceptsecrets() };
  }
  async check(name: string, olds: Props, news: Props) {
    const req = new provproto.CheckRequest().setUrn(this.urn(name)).setOlds(toStruct(this.withProvider(olds))).setNews(toStruct(this.withProvider(news)));
    const res = await this.call<provproto.CheckRequest, provproto.CheckResponse>("check", req);
    return { inputs: fromStruct(res.getInputs()),
             failures: res.getFailuresList().map((f) => ({ property: f.getProperty(), reason: f.getReason() })) };
  }
  async diff(name: string, id: string, olds: Props, news: Props) {
    const req = new provproto.DiffRequest().setUrn(this.urn(name)).setId(id).setOlds(toStruct(this.withProvider(olds))).setNews(toStruct(this.withProvider(news)));
    const res = await this.call<provproto.DiffRequest, provproto.DiffResponse>("diff", req);
    const C = provproto.DiffResponse.DiffChanges;
    return { changes: res.getChanges() === C.DIFF_SOME ? true : res.getChanges() === C.DIFF_NONE ? false : undefined,
             replaces: res.getReplacesList(), deleteBeforeReplace: res.getDeletebeforereplace() };
  }
  async create(name: string, inputs: Props, timeoutSec = 0) {
    const req = new provproto.CreateRequest().setUrn(this.urn(name)).setProperties(toStruct(this.withProvider(inputs))).setTimeout(timeoutSec);
    const res = await this.call<provproto.CreateRequest, provproto.CreateResponse>("create", req);
    return { id: res.getId(), outs: fromStruct(res.getProperties()) };
  }
  async read(name: string, id: string, state: Props) {
    const req = new provproto.ReadRequest().setUrn(this.urn(name)).setId(id).setProperties(toStruct(this.withProvider(state)));
    const res = await this.call<provproto.ReadRequest, provproto.ReadResponse>("read", req);
    return { id: res.getId(), props: fromStruct(res.getProperties()), inputs: res.getInputs() && fromStruct(res.getInputs()) };
  }
  async update(name: string, id: string, olds: Props, news: Props) {
    const req = new provproto.UpdateRequest().setUrn(this.urn(name)).setId(id).setOlds(toStruct(this.withProvider(olds))).setNews(toStruct(this.withProvider(news)));
    const res = await this.call<provproto.UpdateRequest, provproto.UpdateResponse>("update", req);
    return { outs: fromStruct(res.getProperties()) };
  }
  async delete(name: string, id: string, state: Props) {
    const req = new provproto.DeleteRequest().setUrn(this.urn(name)).setId(id).setProperties(toStruct(this.withProvider(state)));
    await this.call("delete", req);
  }
  async stop() {
    this.client.close();
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill("SIGTERM");
      await new Promise((r) => this.proc.once("exit", r));
    }
  }
  /** Kill the plugin the way a second Ctrl-C does (no cleanup runs). */
  async kill() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGKILL");
    await exited;
  }
}
