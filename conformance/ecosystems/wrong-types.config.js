// Types PM2 refuses: `pm2 start` fails on this file, and Ferry names every problem in one run.
module.exports = {
  apps: [
    { name: 'broken', script: 'server.js', log_date_format: true, exec_mode: 'forked', min_uptime: 50, restart_delay: 'soon' },
  ],
};
