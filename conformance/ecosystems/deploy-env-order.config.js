// conformance: env=production
// Layers that overlap under `pm2 start --env production`: the deploy block's env wins over the app's env (PM2 assigns
// it into that very object), env_production wins over both and over `port`; `port` wins over env. (Numbers in `args`
// are left out: Ferry passes them as text, PM2 keeps them in pm2_env.args; see docs/pm2.md.)
module.exports = {
  apps: [
    {
      name: 'layers',
      script: 'server.js',
      port: 3000,
      env: { A: 'app', B: 'app', PORT: 1 },
      env_production: { B: 'block', PORT: 80 },
    },
    {
      name: 'port-over-env',
      script: 'server.js',
      port: 3001,
      env: { A: 'app', PORT: 1 },
      env_production: { C: 'block' },
    },
  ],
  deploy: { production: { env: { A: 'deploy', D: 'deploy' } } },
};
