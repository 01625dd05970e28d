// conformance: env=production
// env_<name> merged by `pm2 start --env production` (publish --env-name production), and append_env_to_name.
module.exports = {
  apps: [
    {
      name: 'envs',
      script: 'server.js',
      append_env_to_name: true,
      env: { NODE_ENV: 'development', SHARED: 'base', RETRIES: 3 },
      env_production: { NODE_ENV: 'production', API_URL: 'https://api.example.invalid' },
      env_staging: { NODE_ENV: 'staging' },
    },
  ],
  deploy: { production: { env: { FROM_DEPLOY: 'yes' } } },
};
