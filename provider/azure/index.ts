/** Azure components: Flexible Server prerequisites (firewall rules, server parameters) and its restart. */
export {
  FlexibleServerPrerequisites, STATIC_PARAMETERS, serverParameters, staticParameters, restartTrigger, needsRestart,
  firewallRuleSpecs, replicationRuleName, defaultRulePrefix, validFirewallRuleName, ipRange,
} from "./flexibleServerPrerequisites";
export type { FlexibleServerPrerequisitesArgs, ExtraFirewallRule, FirewallRuleSpec, ServerParameter } from "./flexibleServerPrerequisites";
export { ServerRestart, serverRestartProvider } from "./serverRestart";
export type { ServerRestartArgs } from "./serverRestart";
export { restartServer, restartId, validateArmEndpoint, DEFAULT_API_VERSION, DEFAULT_ARM_ENDPOINT } from "./serverRestartHandlers";
export type { ServerRestartInputs, ServerRestartOutputs } from "./serverRestartHandlers";
