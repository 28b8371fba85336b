//! Response bodies as Meta sends them. Fields Meta may omit are `Option` and skipped when `None`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Number;

/// `GET /{object-id}/insights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightsResponse {
    pub data: Vec<Insight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// One metric × period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    pub name: String,
    pub period: String,
    pub values: Vec<InsightValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub id: String,
}

/// One value: a number or a breakdown object. Lifetime values have no `end_time`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsightValue {
    pub value: MetricValue,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
}

/// A number, or a breakdown (`{"F.25-34": 120, "M.65+": 31}`; zero keys omitted; `{}` when Meta withholds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricValue {
    Number(Number),
    Breakdown(BTreeMap<String, Number>),
}

impl MetricValue {
    pub fn int(n: i64) -> Self {
        MetricValue::Number(Number::from(n))
    }
}

/// A borrowed view of an `/insights` response: what ingest reads, decoded without copying strings (names, periods,
/// end times and breakdown keys borrow from the body unless they contain escapes) and without the buffering of an
/// untagged enum; `title`, `description`, `id` and `paging` are skipped. The owned [`InsightsResponse`] is for
/// writing responses (the simulator) and for tests.
#[derive(Debug, Deserialize)]
pub struct InsightsView<'a> {
    #[serde(borrow)]
    pub data: Vec<InsightView<'a>>,
}

/// One metric × period of an [`InsightsView`].
#[derive(Debug, Deserialize)]
pub struct InsightView<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub period: Cow<'a, str>,
    #[serde(borrow)]
    pub values: Vec<ValueView<'a>>,
}

/// One value of an [`InsightView`].
#[derive(Debug, Deserialize)]
pub struct ValueView<'a> {
    #[serde(borrow)]
    pub value: MetricValueView<'a>,
    #[serde(default, borrow)]
    pub end_time: Option<Cow<'a, str>>,
}

/// A number, or a breakdown's keys and numbers in the order Meta wrote them.
#[derive(Debug, PartialEq)]
pub enum MetricValueView<'a> {
    Number(f64),
    Breakdown(Vec<(Cow<'a, str>, f64)>),
}

impl<'de: 'a, 'a> Deserialize<'de> for MetricValueView<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = MetricValueView<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or an object of numbers")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(MetricValueView::Number(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(MetricValueView::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(MetricValueView::Number(v))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut cells = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((k, v)) = map.next_entry::<Borrowed<'a>, f64>()? {
                    cells.push((k.0, v));
                }
                Ok(MetricValueView::Breakdown(cells))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

/// A string borrowed from the body when it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Inner<'a>(#[serde(borrow)] Cow<'a, str>);
        Inner::deserialize(d).map(|i| Borrowed(i.0))
    }
}

/// Paging links: time-based (`previous`/`next`) for insights, cursor-based for edges such as posts.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Paging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursors: Option<Cursors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Meta omits `after` on the last page of a listing and sometimes `before` on the first: both are optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cursors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl std::fmt::Debug for Paging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paging")
            .field("cursors", &self.cursors)
            .field("previous", &self.previous.as_deref().map(redact))
            .field("next", &self.next.as_deref().map(redact))
            .finish()
    }
}

/// `text` with the value of every `access_token` (as a query parameter or a JSON field) replaced by `***`: Meta
/// echoes the token in paging links, and a page object can carry its page token.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("access_token") {
        let after_key = at + "access_token".len();
        out.push_str(&rest[..after_key]);
        rest = &rest[after_key..];
        let sep = if rest.starts_with('=') {
            1
        } else if rest.starts_with("\":\"") {
            3
        } else if rest.starts_with("\": \"") {
            4
        } else {
            continue;
        };
        out.push_str(&rest[..sep]);
        rest = &rest[sep..];
        let end = rest.find(|c: char| c == '&' || c == '"' || c == '#' || c.is_whitespace()).unwrap_or(rest.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `GET /{page-id}/published_posts` (and `/posts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostsResponse {
    pub data: Vec<PostObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

/// A post with the fields that were asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostObject {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permalink_url: Option<String>,
    /// `added_photos`, `added_video`, `shared_story`, `mobile_status_update`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_type: Option<String>,
    /// Older API versions: `photo`, `video`, `link`, `status`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Field expansion `insights.metric(...)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insights: Option<InsightsResponse>,
}

/// `GET /{page-id}?fields=...`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PageObject {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followers_count: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

impl std::fmt::Debug for PageObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageObject")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("fan_count", &self.fan_count)
            .field("followers_count", &self.followers_count)
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `GET /debug_token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugTokenResponse {
    pub data: DebugTokenData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebugTokenData {
    pub app_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub application: String,
    pub expires_at: i64,
    pub is_valid: bool,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<GraphError>,
    /// When the app's access to the person's data ends (90 days after they last used the app), Unix seconds; 0 or
    /// absent: not reported.
    #[serde(default)]
    pub data_access_expires_at: i64,
}

/// `GET /oauth/access_token`: a code exchanged for a user token, or a short-lived token for a long-lived one.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OAuthToken {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    /// Seconds until the token expires; absent for tokens that do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthToken").field("access_token", &"***").field("expires_in", &self.expires_in).finish()
    }
}

/// `GET /me/accounts`: the pages a person administers, each with its page access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountsResponse {
    pub data: Vec<Account>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub access_token: String,
    #[serde(default)]
    pub category: String,
    /// What the person may do on the page (`ANALYZE`, `MANAGE`, ...).
    #[serde(default)]
    pub tasks: Vec<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("id", &self.id).field("name", &self.name).field("access_token", &"***").finish()
    }
}

/// `GET /me/permissions`: each permission asked for, granted or declined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionsResponse {
    pub data: Vec<Permission>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Permission {
    pub permission: String,
    pub status: String,
}

/// One inner request of `POST /` with `batch=[...]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub method: String,
    pub relative_url: String,
}

/// One inner response of a batch: the inner body is a JSON *string*.
impl std::fmt::Debug for BatchRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRequest")
            .field("method", &self.method)
            .field("relative_url", &redact(&self.relative_url))
            .finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub code: u16,
    pub headers: Vec<BatchHeader>,
    pub body: String,
}

impl std::fmt::Debug for BatchResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchResponse")
            .field("code", &self.code)
            .field("headers", &self.headers)
            .field("body", &redact(&self.body))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchHeader {
    pub name: String,
    pub value: String,
}

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    pub error: GraphError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_subcode: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_transient: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_user_msg: Option<String>,
    #[serde(default)]
    pub fbtrace_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_borrowed_view_reads_what_the_owned_types_read() {
        let owned: InsightsResponse = serde_json::from_str(RECORDED_INSIGHTS).unwrap();
        let view: InsightsView = serde_json::from_str(RECORDED_INSIGHTS).unwrap();
        assert_eq!(view.data.len(), owned.data.len());
        for (v, o) in view.data.iter().zip(&owned.data) {
            assert_eq!((&*v.name, &*v.period), (o.name.as_str(), o.period.as_str()));
            assert!(matches!(v.name, Cow::Borrowed(_)), "no copy of a plain string");
            assert_eq!(v.values.len(), o.values.len());
            for (vv, ov) in v.values.iter().zip(&o.values) {
                assert_eq!(vv.end_time.as_deref(), ov.end_time.as_deref());
                match (&vv.value, &ov.value) {
                    (MetricValueView::Number(a), MetricValue::Number(b)) => assert_eq!(Some(*a), b.as_f64()),
                    (MetricValueView::Breakdown(a), MetricValue::Breakdown(b)) => {
                        assert_eq!(a.len(), b.len());
                        assert!(a.iter().all(|(k, n)| b.get(k.as_ref()).and_then(Number::as_f64) == Some(*n)));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        // Breakdown keys in the order written, escapes decoded, floats kept; a string value is the wrong shape.
        let body = r#"{"data":[{"name":"m","period":"day","values":[
            {"value":{"M.65+":1,"F.\u0031":2.5},"end_time":"t"},{"value":-3}]}]}"#;
        let view: InsightsView = serde_json::from_str(body).unwrap();
        assert_eq!(
            view.data[0].values[0].value,
            MetricValueView::Breakdown(vec![("M.65+".into(), 1.0), ("F.1".into(), 2.5)])
        );
        assert_eq!(view.data[0].values[1].value, MetricValueView::Number(-3.0));
        assert_eq!(view.data[0].values[1].end_time, None);
        let err = serde_json::from_str::<InsightsView>(&body.replace("-3", "\"x\"")).unwrap_err();
        assert!(err.to_string().contains("a number or an object of numbers"), "{err}");
    }

    /// The shape of Meta's documented `/insights` example (page_impressions_unique, daily).
    const RECORDED_INSIGHTS: &str = r#"{
      "data": [
        {
          "name": "page_impressions_unique",
          "period": "day",
          "values": [
            {"value": 1248, "end_time": "2018-03-11T08:00:00+0000"},
            {"value": 1512, "end_time": "2018-03-12T07:00:00+0000"}
          ],
          "title": "Daily Total Reach",
          "description": "Daily: The number of people who had any content from your Page or about your Page enter their screen. This includes posts, check-ins, ads, social information from people who interact with your Page and more. (Unique Users)",
          "id": "1234567890/insights/page_impressions_unique/day"
        },
        {
          "name": "page_fans_gender_age",
          "period": "day",
          "values": [
            {"value": {"F.25-34": 412, "F.35-44": 530, "M.65+": 121, "U.18-24": 3}, "end_time": "2018-03-12T07:00:00+0000"}
          ],
          "title": "Lifetime Likes by Gender and Age",
          "description": "Lifetime: Aggregated demographic data about the people who like your Page. (Unique Users)",
          "id": "1234567890/insights/page_fans_gender_age/day"
        }
      ],
      "paging": {
        "previous": "https://graph.facebook.com/v2.12/1234567890/insights?metric=page_impressions_unique&since=1520496000&until=1520668800",
        "next": "https://graph.facebook.com/v2.12/1234567890/insights?metric=page_impressions_unique&since=1520841600&until=1521014400"
      }
    }"#;

    #[test]
    fn parses_a_recorded_insights_response_and_writes_it_back_in_the_same_shape() {
        let parsed: InsightsResponse = serde_json::from_str(RECORDED_INSIGHTS).unwrap();
        assert_eq!(parsed.data.len(), 2);
        assert_eq!(parsed.data[0].values[0].value, MetricValue::int(1248));
        match &parsed.data[1].values[0].value {
            MetricValue::Breakdown(b) => assert_eq!(b["F.35-44"], Number::from(530)),
            other => panic!("{other:?}"),
        }
        let again: serde_json::Value = serde_json::to_value(&parsed).unwrap();
        let original: serde_json::Value = serde_json::from_str(RECORDED_INSIGHTS).unwrap();
        assert_eq!(again, original);
    }

    #[test]
    fn lifetime_values_have_no_end_time() {
        let body = r#"{"data":[{"name":"post_video_views","period":"lifetime","values":[{"value":20412}],"title":"Lifetime Total Video Views","description":"Lifetime: Total number of times your video was viewed for 3 seconds or more.","id":"123_456/insights/post_video_views/lifetime"}]}"#;
        let parsed: InsightsResponse = serde_json::from_str(body).unwrap();
        assert!(parsed.data[0].values[0].end_time.is_none());
        assert!(parsed.paging.is_none());
        assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
    }

    #[test]
    fn parses_a_recorded_error_body() {
        let body = r#"{"error":{"message":"(#100) The value must be a valid insights metric","type":"OAuthException","code":100,"fbtrace_id":"AbCdEf123"}}"#;
        let parsed: GraphErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code, 100);
        assert_eq!(serde_json::to_string(&parsed).unwrap(), body);
    }

    #[test]
    fn parses_a_recorded_posts_page_with_cursors() {
        let body = r#"{"data":[{"created_time":"2018-03-10T09:15:02+0000","message":"Watch: the signs of a stroke","id":"1234567890_1020"}],"paging":{"cursors":{"before":"QVFIUk1","after":"QVFIUk2"},"next":"https://graph.facebook.com/v2.12/1234567890/published_posts?limit=25&after=QVFIUk2"}}"#;
        let parsed: PostsResponse = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.data[0].id, "1234567890_1020");
        assert_eq!(parsed.paging.unwrap().cursors.unwrap().after.as_deref(), Some("QVFIUk2"));
    }

    #[test]
    fn the_last_page_of_a_listing_may_omit_cursors() {
        for paging in [
            r#"{"cursors":{"before":"QVFIUk1"}}"#,
            r#"{"cursors":{"after":"QVFIUk2"}}"#,
            r#"{"cursors":{}}"#,
            r#"{"previous":"https://graph.facebook.com/v2.12/1/published_posts?before=QVFIUk1"}"#,
            r#"{}"#,
        ] {
            let body =
                format!(r#"{{"data":[{{"id":"1_2","created_time":"2018-03-10T09:15:02+0000"}}],"paging":{paging}}}"#);
            let parsed: PostsResponse = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{paging}: {e}"));
            assert!(parsed.paging.unwrap().next.is_none());
        }
        // Fields Meta adds later are ignored, not fatal.
        let extra =
            r#"{"data":[],"paging":{"cursors":{"before":"a","after":"b","extra":1}},"summary":{"total_count":3}}"#;
        assert!(serde_json::from_str::<PostsResponse>(extra).is_ok());
    }

    #[test]
    fn debug_of_any_wire_type_never_prints_an_access_token() {
        const TOKEN: &str = "FAKE-TEST-TOKEN-not-a-real-secret";
        let paging = Paging {
            cursors: None,
            previous: None,
            next: Some(format!("https://graph.facebook.com/v2.12/1/insights?access_token={TOKEN}&since=1")),
        };
        let page = PageObject {
            id: "1".into(),
            name: None,
            fan_count: None,
            followers_count: None,
            access_token: Some(TOKEN.into()),
        };
        let batch = BatchRequest { method: "GET".into(), relative_url: format!("me?access_token={TOKEN}") };
        let response =
            BatchResponse { code: 200, headers: vec![], body: format!(r#"{{"id":"1","access_token":"{TOKEN}"}}"#) };
        let insights = InsightsResponse { data: vec![], paging: Some(paging.clone()) };
        for text in [
            format!("{paging:?}"),
            format!("{page:?}"),
            format!("{batch:?}"),
            format!("{response:?}"),
            format!("{insights:?}"),
            format!("{:?}", PostsResponse { data: vec![], paging: Some(paging.clone()) }),
        ] {
            assert!(!text.contains(TOKEN), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        assert_eq!(redact("a?access_token=x&b=1"), "a?access_token=***&b=1");
        assert_eq!(redact("no token here"), "no token here");
    }
}
