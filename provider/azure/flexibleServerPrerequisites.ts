/**
 * `FlexibleServerPrerequisites`: everything an Azure Database for PostgreSQL Flexible Server needs
 * before pgferry can migrate from it (or into it), as declared resources instead of portal clicks:
 *
 * - one firewall rule per replication client, named `<prefix>_<n>_replrule` (the name Azure's fix for
 *   `28000: no pg_hba.conf entry for replication connection` asks for), plus any extra rules;
 * - server parameters: wal_level=logical, max_replication_slots, max_wal_senders, the azure.extensions
 *   allow-list and any extra parameters, each `source: "user-override"`, kept on destroy
 *   (`retainOnDelete`), and applied one after the other (concurrent writes fail with ServerIsBusy);
 * - a `ServerRestart` after the last parameter when a static parameter is set, re-run whenever a
 *   static value changes (its `trigger` is a hash of them), never for dynamic ones.
 *
 * The planning is in pure functions below the class (`serverParameters`, `staticParameters`,
 * `restartTrigger`, `needsRestart`, `firewallRuleSpecs`, `ipRange`).
 */
import * as crypto from "crypto";
import * as pulumi from "@pulumi/pulumi";
import * as authorization from "@pulumi/azure-native/authorization";
import * as dbforpostgresql from "@pulumi/azure-native/dbforpostgresql";
import { ServerRestart } from "./serverRestart";

export interface ExtraFirewallRule {
  /** Azure firewall rule name: letters, digits, _ and - (at most 128). */
  name: string;
  startIpAddress: pulumi.Input<string>;
  endIpAddress: pulumi.Input<string>;
}

export interface FlexibleServerPrerequisitesArgs {
  resourceGroupName: pulumi.Input<string>;
  serverName: pulumi.Input<string>;
  /** Needed for the restart; defaults to the subscription of the current Azure login (getClientConfig). */
  subscriptionId?: pulumi.Input<string>;
  /**
   * Addresses pgferry (or the target server) connects from for replication: an IPv4 address or a
   * CIDR block each. Each gets the firewall rule `<firewallRulePrefix>_<n>_replrule` (n from 1).
   */
  replicationClientIps: pulumi.Input<string>[];
  /** Prefix of the replication rule names (default: the component name with other characters made `_`). */
  firewallRulePrefix?: string;
  extraFirewallRules?: ExtraFirewallRule[];
  /**
   * Set wal_level=logical, max_replication_slots and max_wal_senders (default true: a migration
   * source). false for a server that is only a target and needs just rules, extensions or extras.
   */
  logicalReplication?: boolean;
  /** max_replication_slots (default 10). */
  maxReplicationSlots?: number;
  /** max_wal_senders (default 10). */
  maxWalSenders?: number;
  /** More server parameters, name → value (e.g. shared_preload_libraries, max_worker_processes). */
  extraParameters?: Record<string, string>;
  /** Extensions to allow (the azure.extensions allow-list), e.g. ["pg_stat_statements", "pgcrypto"]. */
  extensions?: string[];
  /** Restart the server when a static parameter is set or changes (default true). */
  restart?: boolean;
  /** ARM bearer token for the restart; defaults to the current login's (authorization.getClientToken). */
  accessToken?: pulumi.Input<string>;
  /** ARM base URL for the restart (default https://management.azure.com). */
  armEndpoint?: pulumi.Input<string>;
  /** Microsoft.DBforPostgreSQL API version for the restart (default 2025-08-01). */
  apiVersion?: pulumi.Input<string>;
}

export class FlexibleServerPrerequisites extends pulumi.ComponentResource {
  /** Azure names of the firewall rules declared (replication rules first). */
  public readonly firewallRuleNames: pulumi.Output<string[]>;
  /** Server parameters declared, in the order they are applied. */
  public readonly parameterNames: pulumi.Output<string[]>;
  /** sha256 of the static parameter values the restart is for; undefined when no restart is declared. */
  public readonly restartTrigger: pulumi.Output<string | undefined>;
  public readonly firewallRules: dbforpostgresql.FirewallRule[] = [];
  public readonly configurations: dbforpostgresql.Configuration[] = [];
  /** The restart, when one is needed (a static parameter is set and `restart` is not false). */
  public readonly restart?: ServerRestart;

  constructor(name: string, args: FlexibleServerPrerequisitesArgs, opts?: pulumi.ComponentResourceOptions) {
    super("pgferry:azure:FlexibleServerPrerequisites", name, {}, opts);

    const server = { resourceGroupName: args.resourceGroupName, serverName: args.serverName };
    const specs = firewallRuleSpecs(name, args);
    const params = serverParameters(args);
    const trigger = needsRestart(args) ? restartTrigger(staticParameters(args)) : undefined;

    // Everything that writes to the server runs one after the other: Azure refuses concurrent
    // operations on a server (ServerIsBusy).
    let previous: pulumi.Resource | undefined;
    for (const spec of specs) {
      const range = spec.address !== undefined ? pulumi.output(spec.address).apply(ipRange) : undefined;
      const rule = new dbforpostgresql.FirewallRule(spec.resourceName, {
        ...server,
        firewallRuleName: spec.firewallRuleName,
        startIpAddress: range ? range.start : spec.startIpAddress!,
        endIpAddress: range ? range.end : spec.endIpAddress!,
      }, { parent: this, dependsOn: previous ? [previous] : [] });
      this.firewallRules.push(rule);
      previous = rule;
    }
    for (const p of params) {
      const cfg = new dbforpostgresql.Configuration(`${name}-${p.name}`, {
        ...server,
        configurationName: p.name,
        value: p.value,
        source: "user-override",
      }, {
        parent: this,
        dependsOn: previous ? [previous] : [],
        // Deleting a server parameter fails or cannot reset it (pulumi-azure-native #3072, #2043);
        // destroying the stack leaves the server as configured.
        retainOnDelete: true,
      });
      this.configurations.push(cfg);
      previous = cfg;
    }
    if (trigger !== undefined) {
      const subscriptionId = args.subscriptionId ?? authorization.getClientConfigOutput({ parent: this }).subscriptionId;
      const accessToken = args.accessToken ?? authorization.getClientTokenOutput({}, { parent: this }).token;
      this.restart = new ServerRestart(`${name}-restart`, {
        ...server,
        subscriptionId,
        accessToken: pulumi.secret(accessToken),
        trigger,
        ...(args.apiVersion !== undefined ? { apiVersion: args.apiVersion } : {}),
        ...(args.armEndpoint !== undefined ? { armEndpoint: args.armEndpoint } : {}),
      }, { parent: this, dependsOn: previous ? [previous] : [] });
    }

    this.firewallRuleNames = pulumi.output(specs.map((s) => s.firewallRuleName));
    this.parameterNames = pulumi.output(params.map((p) => p.name));
    this.restartTrigger = pulumi.output(trigger);
    this.registerOutputs({
      firewallRuleNames: this.firewallRuleNames,
      parameterNames: this.parameterNames,
      restartTrigger: this.restartTrigger,
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Pure planning

/**
 * Server parameters that take effect only after a restart on Azure Database for PostgreSQL Flexible
 * Server (postmaster context). Setting any of them declares a restart.
 */
export const STATIC_PARAMETERS: readonly string[] = [
  "wal_level", "max_replication_slots", "max_wal_senders", "shared_preload_libraries", "max_worker_processes",
  "max_logical_replication_workers", "max_connections", "shared_buffers", "max_prepared_transactions",
  "max_locks_per_transaction", "max_pred_locks_per_transaction", "track_commit_timestamp", "wal_buffers",
  "huge_pages", "max_files_per_process", "cron.database_name", "cron.max_running_jobs", "pg_qs.max_query_text_length",
];
const STATIC = new Set(STATIC_PARAMETERS);

export interface ServerParameter {
  name: string;
  value: string;
  /** Needs a restart to take effect. */
  static: boolean;
}

/** Parameters the component declares, in the order they are applied. Throws on conflicting input. */
export function serverParameters(args: Pick<FlexibleServerPrerequisitesArgs,
  "logicalReplication" | "maxReplicationSlots" | "maxWalSenders" | "extensions" | "extraParameters">): ServerParameter[] {
  const out: ServerParameter[] = [];
  const add = (name: string, value: string) => {
    if (out.some((p) => p.name.toLowerCase() === name.toLowerCase())) {
      throw new Error(`server parameter ${name} is set twice (use maxReplicationSlots, maxWalSenders and extensions rather than extraParameters for those)`);
    }
    out.push({ name, value, static: STATIC.has(name.toLowerCase()) });
  };
  if (args.logicalReplication !== false) {
    add("wal_level", "logical");
    add("max_replication_slots", String(positiveInt("maxReplicationSlots", args.maxReplicationSlots ?? 10)));
    add("max_wal_senders", String(positiveInt("maxWalSenders", args.maxWalSenders ?? 10)));
  } else if (args.maxReplicationSlots !== undefined || args.maxWalSenders !== undefined) {
    throw new Error("maxReplicationSlots and maxWalSenders need logicalReplication (it is false)");
  }
  if (args.extensions && args.extensions.length > 0) {
    const names = [...new Set(args.extensions.map((e) => e.trim()).filter((e) => e !== ""))];
    for (const e of names) if (!/^[A-Za-z0-9_]+$/.test(e)) throw new Error(`extension name "${e}" is not valid`);
    add("azure.extensions", names.join(","));
  }
  for (const [name, value] of Object.entries(args.extraParameters ?? {})) {
    if (!/^[A-Za-z0-9_.]+$/.test(name)) throw new Error(`server parameter name "${name}" is not valid`);
    add(name, String(value));
  }
  return out;
}

/** The static parameters set, name → value, names sorted. */
export function staticParameters(args: Parameters<typeof serverParameters>[0]): Record<string, string> {
  const entries = serverParameters(args).filter((p) => p.static).map((p) => [p.name.toLowerCase(), p.value] as const);
  return Object.fromEntries(entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** sha256 hex of the static name=value pairs, independent of their order: the restart's trigger. */
export function restartTrigger(params: Record<string, string>): string {
  const norm = new Map(Object.entries(params).map(([k, v]) => [k.toLowerCase(), String(v)] as const));
  const text = [...norm.keys()].sort().map((k) => `${k}=${norm.get(k)}`).join("\n");
  return crypto.createHash("sha256").update(text).digest("hex");
}

/** A restart is declared when a static parameter is set and `restart` is not false. */
export function needsRestart(args: Parameters<typeof serverParameters>[0] & { restart?: boolean }): boolean {
  return args.restart !== false && Object.keys(staticParameters(args)).length > 0;
}

export interface FirewallRuleSpec {
  /** Pulumi resource name. */
  resourceName: string;
  /** Azure firewall rule name. */
  firewallRuleName: string;
  /** For replication rules: the address or CIDR block (start/end derived with ipRange). */
  address?: pulumi.Input<string>;
  startIpAddress?: pulumi.Input<string>;
  endIpAddress?: pulumi.Input<string>;
}

/** Azure firewall rule names allow letters, digits, _ and -, at most 128. */
export function validFirewallRuleName(n: string): boolean {
  return /^[A-Za-z0-9_-]{1,128}$/.test(n);
}

/** `<prefix>_<n>_replrule`, n from 1. */
export function replicationRuleName(prefix: string, n: number): string {
  return `${prefix}_${n}_replrule`;
}

/** The component name with every character Azure refuses in rule names made `_`. */
export function defaultRulePrefix(name: string): string {
  return name.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 100) || "pgferry";
}

export function firewallRuleSpecs(name: string, args: Pick<FlexibleServerPrerequisitesArgs,
  "replicationClientIps" | "firewallRulePrefix" | "extraFirewallRules">): FirewallRuleSpec[] {
  const prefix = args.firewallRulePrefix ?? defaultRulePrefix(name);
  const specs: FirewallRuleSpec[] = (args.replicationClientIps ?? []).map((address, i) => ({
    resourceName: `${name}-replrule-${i + 1}`, firewallRuleName: replicationRuleName(prefix, i + 1), address,
  }));
  for (const r of args.extraFirewallRules ?? []) {
    specs.push({ resourceName: `${name}-fw-${r.name}`, firewallRuleName: r.name, startIpAddress: r.startIpAddress, endIpAddress: r.endIpAddress });
  }
  const seen = new Set<string>();
  for (const s of specs) {
    if (!validFirewallRuleName(s.firewallRuleName)) {
      throw new Error(`firewall rule name "${s.firewallRuleName}" is not valid on Azure (letters, digits, _ and -, at most 128)`);
    }
    const key = s.firewallRuleName.toLowerCase();
    if (seen.has(key)) throw new Error(`firewall rule name "${s.firewallRuleName}" is used twice`);
    seen.add(key);
  }
  return specs;
}

/** An IPv4 address or CIDR block → the first and last address Azure's firewall rule takes. */
export function ipRange(addressOrCidr: string): { start: string; end: string } {
  const m = /^\s*(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?\s*$/.exec(addressOrCidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m?.[5] !== undefined ? Number(m[5]) : 32;
  if (!m || octets.some((o) => o > 255) || bits > 32) {
    throw new Error(`"${addressOrCidr}" is not an IPv4 address or CIDR block (Azure firewall rules are IPv4)`);
  }
  const ip = ((octets[0] << 24) >>> 0) + (octets[1] << 16) + (octets[2] << 8) + octets[3];
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const start = (ip & mask) >>> 0;
  const end = (start | (~mask >>> 0)) >>> 0;
  const fmt = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
  return { start: fmt(start), end: fmt(end) };
}

function positiveInt(what: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new Error(`${what} must be a whole number ≥ 1, got ${v}`);
  return v;
}
