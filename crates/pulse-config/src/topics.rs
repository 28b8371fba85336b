//! Topic dictionaries: what a post is about, from keywords and hashtags in its text. Declared as `[[topic]]` in the
//! config (each for every tenant, or for the tenants it names), added to [`defaults`] (the seasonal and practical
//! subjects the seeds' practice advice names); a declared topic with a default's name replaces that default.

use serde::Deserialize;

use pulse_domain::TenantId;

/// The most topics a config may declare, and terms a topic may have.
pub const MAX_TOPICS: usize = 50;
pub const MAX_TERMS: usize = 40;

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Name shown in reports, such as `Flu vaccination`.
    pub name: String,
    /// Words or phrases (case-insensitive, at least 3 characters) that start at a word in the post's text: `vaccin`
    /// matches "vaccination", not "revaccinate".
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Hashtags (case-insensitive), matched whole: `#flu` matches "#FLU!" but not "#flujab".
    #[serde(default)]
    pub hashtags: Vec<String>,
    /// Only these tenants (default: every tenant).
    #[serde(default)]
    pub tenants: Vec<TenantId>,
}

impl TopicConfig {
    fn new(name: &str, keywords: &[&str], hashtags: &[&str]) -> Self {
        TopicConfig {
            name: name.to_owned(),
            keywords: keywords.iter().map(|k| (*k).to_owned()).collect(),
            hashtags: hashtags.iter().map(|h| (*h).to_owned()).collect(),
            tenants: Vec::new(),
        }
    }

    /// The topic with its terms lower-cased, once, for [`TopicConfig::matches_lowercase`].
    pub fn lowercased(&self) -> TopicConfig {
        TopicConfig {
            keywords: self.keywords.iter().map(|k| k.to_lowercase()).collect(),
            hashtags: self.hashtags.iter().map(|h| h.to_lowercase()).collect(),
            ..self.clone()
        }
    }

    /// Whether a post with this lower-cased text is about the topic (its terms lower-cased: [`Self::lowercased`]).
    pub fn matches_lowercase(&self, text: &str) -> bool {
        self.keywords.iter().any(|k| starts_a_word(text, k)) || self.hashtags.iter().any(|h| whole_hashtag(text, h))
    }

    /// What is wrong with the topic on its own, each with the field at fault.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = self.name.as_str();
        if name.trim().is_empty()
            || name.trim() != name
            || name.chars().count() > 40
            || name.chars().any(char::is_control)
            || name.eq_ignore_ascii_case(NO_TOPIC)
        {
            out.push((
                "name",
                format!(
                    "a topic's name is 1 to 40 characters, without control characters or spaces at either end, and \
                     not `{NO_TOPIC}`"
                ),
            ));
        }
        if self.keywords.is_empty() && self.hashtags.is_empty() {
            out.push(("keywords", "a topic needs at least one keyword or hashtag".to_owned()));
        }
        if self.keywords.len() + self.hashtags.len() > MAX_TERMS {
            out.push(("keywords", format!("a topic has at most {MAX_TERMS} keywords and hashtags")));
        }
        for k in &self.keywords {
            let n = k.trim().chars().count();
            if !(3..=60).contains(&n) || k.trim() != k || k.contains("  ") || k.chars().any(char::is_control) {
                out.push((
                    "keywords",
                    format!(
                        "keyword `{k}`: 3 to 60 characters, single spaces inside and none at either end (shorter \
                         ones match too much)"
                    ),
                ));
            }
        }
        for h in &self.hashtags {
            let body = h.strip_prefix('#').unwrap_or("");
            let n = body.chars().count();
            if !(2..=60).contains(&n) || !body.chars().all(|c| c.is_alphanumeric() || c == '_') {
                out.push(("hashtags", format!("hashtag `{h}`: `#` and 2 to 60 letters, digits or `_`")));
            }
        }
        out
    }
}

/// The dictionary a tenant gets when the config declares no topic for it.
pub fn defaults() -> Vec<TopicConfig> {
    vec![
        TopicConfig::new("Flu vaccination", &["flu vaccin", "flu jab", "flu clinic"], &["#flujab", "#flu"]),
        TopicConfig::new("Travel vaccines", &["travel vaccin", "travel health", "travelling"], &["#travelhealth"]),
        TopicConfig::new(
            "Missed appointments (DNA)",
            &["missed appointment", "appointments were missed", "did not attend"],
            &["#dna"],
        ),
        TopicConfig::new("Opening times", &["opening hours", "opening times", "we are open", "bank holiday"], &[]),
        TopicConfig::new("PPG recruitment", &["patient participation", "ppg"], &["#ppg"]),
    ]
}

/// What posts in none of a tenant's topics are listed as (no topic may be named so).
pub const NO_TOPIC: &str = "None of these topics";

/// The topics of `tenant`: [`defaults`], then the ones declared for it (or for every tenant); a declared topic with
/// a default's name (case-insensitive) takes that default's place.
pub fn for_tenant(declared: &[TopicConfig], tenant: &str) -> Vec<TopicConfig> {
    let own: Vec<&TopicConfig> =
        declared.iter().filter(|t| t.tenants.is_empty() || t.tenants.iter().any(|x| x.as_str() == tenant)).collect();
    let mut out: Vec<TopicConfig> = defaults()
        .into_iter()
        .map(|d| own.iter().find(|t| t.name.eq_ignore_ascii_case(&d.name)).map_or(d, |t| (*t).clone()))
        .collect();
    let added: Vec<TopicConfig> =
        own.into_iter().filter(|t| !out.iter().any(|o| o.name.eq_ignore_ascii_case(&t.name))).cloned().collect();
    out.extend(added);
    out
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `needle` occurs in `text` at the start of a word.
fn starts_a_word(text: &str, needle: &str) -> bool {
    !needle.is_empty()
        && text.match_indices(needle).any(|(i, _)| text[..i].chars().next_back().is_none_or(|c| !is_word(c)))
}

/// `tag` occurs in `text` as a whole hashtag.
fn whole_hashtag(text: &str, tag: &str) -> bool {
    !tag.is_empty()
        && text.match_indices(tag).any(|(i, _)| {
            text[..i].chars().next_back().is_none_or(|c| !is_word(c) && c != '#')
                && text[i + tag.len()..].chars().next().is_none_or(|c| !is_word(c))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about(text: &str) -> Vec<String> {
        let t = text.to_lowercase();
        defaults().into_iter().filter(|d| d.lowercased().matches_lowercase(&t)).map(|d| d.name).collect()
    }

    #[test]
    fn keywords_start_words_and_hashtags_match_whole() {
        assert_eq!(about("Flu vaccine clinics are running this month. #FluJab"), ["Flu vaccination"]);
        assert_eq!(about("Travelling this summer? Check which travel vaccinations you need"), ["Travel vaccines"]);
        assert_eq!(
            about("In May, 150 appointments were missed without being cancelled. #DNA"),
            ["Missed appointments (DNA)"]
        );
        assert_eq!(about("Opening hours: we are open 8am-6.30pm Monday."), ["Opening times"]);
        assert_eq!(about("Join our Patient Participation Group: our Facebook PPG meets online"), ["PPG recruitment"]);
        assert!(about("Self-care tutorial from one of our GPs: managing asthma at home.").is_empty());
        // Inside a word, or a longer hashtag, is not a match.
        assert!(about("the reflu vaccination rate, #DNAtest, #flujabs, DNA").is_empty());
        // Two topics in one post count in both.
        assert_eq!(about("#flu clinic and bank holiday opening times").len(), 2);
    }

    #[test]
    fn a_weak_or_empty_topic_is_refused_by_field() {
        let mut t = TopicConfig::new("", &["ab", " flu", "flu  jab"], &["flu", "#a", "#ok_1"]);
        let fields: Vec<&str> = t.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["name", "keywords", "keywords", "keywords", "hashtags", "hashtags"]);
        for name in [" Flu", "none of these topics", "a\u{7}"] {
            assert_eq!(TopicConfig::new(name, &["flu"], &[]).problems().len(), 1, "{name}");
        }
        // Upper-case terms match once lower-cased.
        assert!(TopicConfig::new("Flu", &["FLU Jab"], &["#FluJab"]).lowercased().matches_lowercase("a flu jab"));
        t = TopicConfig::new("Nothing", &[], &[]);
        assert_eq!(t.problems().len(), 1);
        assert!(defaults().iter().all(|d| d.problems().is_empty()));
    }

    #[test]
    fn declared_topics_add_to_the_defaults_and_replace_one_of_the_same_name() {
        let mut mine = TopicConfig::new("Ours", &["ours"], &[]);
        mine.tenants = vec![TenantId::new("a").unwrap()];
        let flu = TopicConfig::new("flu VACCINATION", &["flu vaccin"], &[]);
        let declared = vec![mine.clone(), flu.clone()];
        let a = for_tenant(&declared, "a");
        assert_eq!(a.len(), defaults().len() + 1);
        assert_eq!((&a[0], a.last().unwrap()), (&flu, &mine), "the default's place taken, the new one added");
        let b = for_tenant(&declared, "b");
        assert_eq!((b.len(), &b[0]), (defaults().len(), &flu));
        assert_eq!(for_tenant(&[], "b"), defaults());
    }
}
