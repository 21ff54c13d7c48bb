/**
 * The gateway's configuration, parsed once at the process edge from flags and env (flags win), with every
 * error reported together. The settings themselves (env var, flag, default, parser, doc) are one table in
 * contract.ts, which the stack's Deployment writes its env from.
 */
import { parseSettings, type GatewayConfig } from "../../contracts/gateway";

export { ConfigError, type GatewayConfig } from "../../contracts/gateway";

export function loadConfig(argv: readonly string[], env: NodeJS.ProcessEnv): GatewayConfig {
  return parseSettings(argv, env);
}
