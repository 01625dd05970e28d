// Options Ferry owns on the instance: PM2 honours them; Ferry drops each with a warning.
module.exports = {
  apps: [
    {
      name: 'owned',
      script: 'server.js',
      namespace: 'production',
      out_file: './logs/out.log',
      error_file: './logs/err.log',
      log_file: './logs/combined.log',
      pid_file: './run/owned.pid',
      watch: ['lib'],
      ignore_watch: ['node_modules'],
      watch_options: { followSymlinks: false },
      watch_delay: 1000,
      username: 'someone',
      name_prefix: 'ignored',
      install_url: 'https://example.invalid/module',
    },
    {
      name: 'owned-aliases',
      script: 'server.js',
      out: './logs/a.log',
      err: './logs/b.log',
      log: true,
      pid: './run/b.pid',
      output: './logs/c.log',
      out_log: './logs/d.log',
      err_log: './logs/e.log',
      error: './logs/f.log',
      err_file: './logs/g.log',
    },
  ],
};
