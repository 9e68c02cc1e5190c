// Mirrors migrations/postgres and migrations/sqlite (same logical schema; tests/api/ops.rs compares them).
// The SQLite-only FTS5 table and the PostgreSQL-only tsvector column are reached through
// messaging::store::search_messages.
diesel::table! {
    instance (id) {
        id -> BigInt,
        bootstrapped_at -> Timestamp,
    }
}

diesel::table! {
    companies (id) {
        id -> BigInt,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    applications (id) {
        id -> BigInt,
        company_id -> BigInt,
        name -> Text,
        domain -> Text,
        token_hash -> Text,
        platform_config -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> BigInt,
        company_id -> BigInt,
        application_id -> Nullable<BigInt>,
        role -> Text,
        first_name -> Text,
        last_name -> Text,
        username -> Nullable<Text>,
        gender -> Nullable<Text>,
        dob -> Nullable<Text>,
        password_hash -> Nullable<Text>,
        status -> Text,
        external_id -> Nullable<Text>,
        meta -> Text,
        attributes -> Text,
        profile_pic_url -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
        opted_out -> Bool,
        wa_bsuid -> Nullable<Text>,
    }
}

diesel::table! {
    user_emails (id) {
        id -> BigInt,
        user_id -> BigInt,
        company_id -> BigInt,
        email -> Text,
        is_primary -> Bool,
        verified -> Bool,
        active -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    user_phones (id) {
        id -> BigInt,
        user_id -> BigInt,
        company_id -> BigInt,
        e164 -> Text,
        country_code -> Integer,
        is_primary -> Bool,
        verified -> Bool,
        active -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    user_groups (id) {
        id -> BigInt,
        company_id -> BigInt,
        application_id -> BigInt,
        name -> Text,
        description -> Text,
        file_url -> Nullable<Text>,
        status -> Text,
        kind -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        conditions -> Text,
    }
}

diesel::table! {
    user_group_members (group_id, user_id) {
        group_id -> BigInt,
        user_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    invites (id) {
        id -> BigInt,
        token_hash -> Text,
        company_id -> BigInt,
        role -> Text,
        email -> Text,
        invited_by -> Nullable<BigInt>,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sessions (id) {
        id -> Text,
        user_id -> BigInt,
        company_id -> BigInt,
        kind -> Text,
        client_id -> Nullable<Text>,
        application_id -> Nullable<BigInt>,
        ip -> Text,
        user_agent -> Text,
        domain -> Nullable<Text>,
        created_at -> Timestamp,
        last_seen_at -> Timestamp,
        expires_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        revoke_reason -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        session_id -> Text,
        parent_hash -> Nullable<Text>,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    auth_clients (id) {
        id -> BigInt,
        company_id -> BigInt,
        client_id -> Text,
        secret_hash -> Nullable<Text>,
        redirect_urls -> Text,
        grants -> Text,
        access_token_ttl -> BigInt,
        refresh_token_ttl -> BigInt,
        auth_code_ttl -> BigInt,
        oidc -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        saml -> Nullable<Text>,
    }
}

diesel::table! {
    auth_codes (code_hash) {
        code_hash -> Text,
        client_id -> Text,
        user_id -> BigInt,
        code_challenge -> Nullable<Text>,
        challenge_method -> Nullable<Text>,
        issued_session_id -> Nullable<Text>,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    otp_challenges (request_id) {
        request_id -> Text,
        company_id -> Nullable<BigInt>,
        user_id -> Nullable<BigInt>,
        channel -> Text,
        destination -> Text,
        purpose -> Text,
        code_hash -> Text,
        attempts -> Integer,
        expires_at -> Timestamp,
        resend_after -> Timestamp,
        consumed_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    totp_secrets (user_id) {
        user_id -> BigInt,
        secret -> Text,
        confirmed_at -> Nullable<Timestamp>,
        last_step -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> BigInt,
        user_id -> BigInt,
        code_hash -> Text,
        used_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    login_failures (key) {
        key -> Text,
        count -> Integer,
        lock_count -> Integer,
        locked_until -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    oauth_states (state_hash) {
        state_hash -> Text,
        client_id -> Nullable<Text>,
        provider -> Text,
        pkce_verifier -> Text,
        nonce -> Nullable<Text>,
        redirect_uri -> Nullable<Text>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        code_challenge -> Nullable<Text>,
    }
}

diesel::table! {
    oauth_identities (id) {
        id -> BigInt,
        provider -> Text,
        subject -> Text,
        user_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    saml_assertions (assertion_key) {
        assertion_key -> Text,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        algorithm -> Text,
        private_key -> Text,
        public_key -> Text,
        created_at -> Timestamp,
        retired_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        company_id -> Nullable<BigInt>,
        user_id -> Nullable<BigInt>,
        kind -> Text,
        ip -> Text,
        detail -> Text,
        at -> Timestamp,
    }
}

diesel::table! {
    channels (id) {
        id -> BigInt,
        company_id -> BigInt,
        provider -> Text,
        phone_e164 -> Text,
        phone_number_id -> Nullable<Text>,
        display_name -> Text,
        secrets -> Text,
        is_default -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
        bot_id -> Nullable<BigInt>,
        team_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    conversations (id) {
        id -> BigInt,
        company_id -> BigInt,
        channel_id -> BigInt,
        customer_id -> BigInt,
        status -> Text,
        assignee_id -> Nullable<BigInt>,
        labels -> Text,
        last_seq -> BigInt,
        message_count -> BigInt,
        unread_count -> BigInt,
        last_read_seq -> BigInt,
        last_message_id -> Nullable<Text>,
        last_update_time -> Timestamp,
        last_free_message_time -> Nullable<Timestamp>,
        created_at -> Timestamp,
        snoozed_until -> Nullable<Timestamp>,
        team_id -> Nullable<BigInt>,
        merged_into -> Nullable<BigInt>,
    }
}

diesel::table! {
    messages (pk) {
        pk -> BigInt,
        id -> Text,
        conversation_id -> BigInt,
        company_id -> BigInt,
        channel_id -> BigInt,
        direction -> Text,
        kind -> Text,
        content -> Nullable<Text>,
        template_id -> Nullable<BigInt>,
        params -> Text,
        status -> Text,
        status_rank -> Integer,
        provider_message_id -> Nullable<Text>,
        client_id -> Nullable<Text>,
        sender_id -> Nullable<BigInt>,
        error_code -> Nullable<Text>,
        seq -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        is_private -> Bool,
        edited_at -> Nullable<Timestamp>,
        deleted_at -> Nullable<Timestamp>,
        send_at -> Nullable<Timestamp>,
        fallback_template_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    message_reactions (id) {
        id -> BigInt,
        company_id -> BigInt,
        message_id -> Text,
        by_id -> BigInt,
        by_customer -> Bool,
        emoji -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    canned_responses (id) {
        id -> BigInt,
        company_id -> BigInt,
        short_code -> Text,
        content -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    teams (id) {
        id -> BigInt,
        company_id -> BigInt,
        name -> Text,
        auto_assign -> Bool,
        max_open_per_agent -> Nullable<Integer>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    team_members (team_id, user_id) {
        team_id -> BigInt,
        user_id -> BigInt,
        company_id -> BigInt,
        last_assigned_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    agent_presence (user_id, node) {
        user_id -> BigInt,
        node -> Text,
        company_id -> BigInt,
        seen_at -> Timestamp,
    }
}

diesel::table! {
    mentions (id) {
        id -> BigInt,
        company_id -> BigInt,
        user_id -> BigInt,
        conversation_id -> BigInt,
        message_id -> Text,
        by_id -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    pending_statuses (id) {
        id -> BigInt,
        channel_id -> BigInt,
        provider_message_id -> Text,
        status -> Text,
        error_code -> Nullable<Text>,
        at -> Timestamp,
    }
}

diesel::table! {
    events (conversation_id, seq) {
        conversation_id -> BigInt,
        seq -> BigInt,
        company_id -> BigInt,
        kind -> Text,
        payload -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    attachments (id) {
        id -> BigInt,
        company_id -> BigInt,
        message_id -> Nullable<Text>,
        ord -> Nullable<Integer>,
        kind -> Text,
        filename -> Text,
        filesize -> BigInt,
        content_type -> Text,
        sha256 -> Nullable<Text>,
        storage_key -> Nullable<Text>,
        state -> Text,
        provider_media_id -> Nullable<Text>,
        uploaded_by -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    templates (id) {
        id -> BigInt,
        company_id -> BigInt,
        name -> Text,
        language -> Text,
        category -> Text,
        content -> Text,
        param_count -> Integer,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        content_sid -> Nullable<Text>,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        kind -> Text,
        ref_id -> Text,
        company_id -> BigInt,
        channel_id -> Nullable<BigInt>,
        attempts -> Integer,
        next_attempt_at -> Timestamp,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        done_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        ordering_key -> Nullable<Text>,
        at_most_once -> Bool,
        attempt_started_at -> Nullable<Timestamp>,
        answer -> Nullable<Text>,
    }
}

diesel::table! {
    webhook_subscriptions (id) {
        id -> BigInt,
        company_id -> BigInt,
        url -> Text,
        events -> Text,
        active -> Bool,
        secrets -> Text,
        bot_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> BigInt,
        company_id -> BigInt,
        subscription_id -> BigInt,
        event_id -> Text,
        event_type -> Text,
        conversation_id -> BigInt,
        seq -> Nullable<BigInt>,
        body -> Text,
        status -> Text,
        attempts -> Integer,
        last_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    campaigns (id) {
        id -> BigInt,
        company_id -> BigInt,
        name -> Text,
        channel_id -> BigInt,
        template_id -> BigInt,
        params -> Text,
        status -> Text,
        start_at -> Nullable<Timestamp>,
        rate_per_second -> Integer,
        created_by -> BigInt,
        lease_owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    campaign_recipients (id) {
        id -> BigInt,
        campaign_id -> BigInt,
        company_id -> BigInt,
        phone -> Text,
        params -> Nullable<Text>,
        status -> Text,
        message_id -> Nullable<Text>,
        error -> Nullable<Text>,
        created_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> BigInt,
        delivery_id -> BigInt,
        status -> Text,
        code -> Nullable<Integer>,
        duration_ms -> BigInt,
        error -> Nullable<Text>,
        at -> Timestamp,
    }
}

diesel::table! {
    webhook_receipts (provider, key) {
        provider -> Text,
        key -> Text,
        received_at -> Timestamp,
    }
}

diesel::joinable!(applications -> companies (company_id));
diesel::joinable!(users -> companies (company_id));
diesel::joinable!(users -> applications (application_id));
diesel::joinable!(user_emails -> users (user_id));
diesel::joinable!(user_emails -> companies (company_id));
diesel::joinable!(user_phones -> users (user_id));
diesel::joinable!(user_phones -> companies (company_id));
diesel::joinable!(user_groups -> companies (company_id));
diesel::joinable!(user_groups -> applications (application_id));
diesel::joinable!(user_group_members -> user_groups (group_id));
diesel::joinable!(user_group_members -> users (user_id));
diesel::joinable!(invites -> companies (company_id));
diesel::joinable!(invites -> users (invited_by));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(sessions -> companies (company_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(auth_clients -> companies (company_id));
diesel::joinable!(auth_codes -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(oauth_identities -> users (user_id));
diesel::joinable!(channels -> companies (company_id));
diesel::joinable!(conversations -> companies (company_id));
diesel::joinable!(conversations -> channels (channel_id));
diesel::joinable!(conversations -> users (customer_id));
diesel::joinable!(messages -> conversations (conversation_id));
diesel::joinable!(messages -> companies (company_id));
diesel::joinable!(messages -> channels (channel_id));
diesel::joinable!(messages -> users (sender_id));
diesel::joinable!(pending_statuses -> channels (channel_id));
diesel::joinable!(events -> conversations (conversation_id));
diesel::joinable!(attachments -> companies (company_id));
diesel::joinable!(templates -> companies (company_id));
diesel::joinable!(webhook_deliveries -> webhook_subscriptions (subscription_id));
diesel::joinable!(webhook_attempts -> webhook_deliveries (delivery_id));

diesel::allow_tables_to_appear_in_same_query!(
    instance,
    companies,
    applications,
    users,
    user_emails,
    user_phones,
    user_groups,
    user_group_members,
    invites,
    sessions,
    refresh_tokens,
    auth_clients,
    auth_codes,
    otp_challenges,
    totp_secrets,
    recovery_codes,
    login_failures,
    oauth_states,
    saml_assertions,
    oauth_identities,
    signing_keys,
    audit_log,
    channels,
    conversations,
    messages,
    pending_statuses,
    events,
    attachments,
    templates,
    outbox,
    webhook_receipts,
    webhook_subscriptions,
    webhook_deliveries,
    webhook_attempts,
    campaigns,
    campaign_recipients,
    mentions,
    canned_responses,
    teams,
    team_members,
    agent_presence,
    message_reactions,
);
