from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from accounts.api import account_email, delete_account, obtain_token, revoke_all_tokens, revoke_token
from shop import api, dashboard, views

urlpatterns = [
    path("", views.catalog, name="catalog"),
    path("p/<str:product_id>/", views.product, name="product"),
    path("p/<str:product_id>/rate/", views.rate, name="rate"),
    path("p/<str:product_id>/unrate/", views.unrate, name="unrate"),
    path("p/<str:product_id>/not-interested/", views.not_interested, name="not_interested"),
    path("p/<str:product_id>/interested-again/", views.interested_again, name="interested_again"),
    path("hidden/", views.hidden_products, name="hidden_products"),
    path("recommendations/", views.recommendations_page, name="recommendations"),
    path("welcome/", views.onboarding, name="onboarding"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("dashboard/plots/<str:name>", dashboard.eda_plot, name="eda_plot"),
    path("healthz", views.healthz, name="healthz"),
    # This is the one URLconf of /api/: the accounts app's endpoints (tokens, account deletion) are here too.
    path("api/recommendations/", api.my_recommendations, name="api_recommendations"),
    path("api/search/", api.search, name="api_search"),
    path("api/products/<str:product_id>/similar/", api.similar, name="api_similar"),
    path("api/ratings/", api.post_rating, name="api_post_rating"),
    path("api/ratings/remove/", api.remove_rating, name="api_remove_rating"),
    path("api/not-interested/", api.post_not_interested, name="api_not_interested"),
    path("api/interested-again/", api.post_interested_again, name="api_interested_again"),
    path("api/hidden/", api.hidden, name="api_hidden"),
    path("api/account/delete/", delete_account, name="api_delete_account"),
    path("api/account/email/", account_email, name="api_account_email"),
    path("api/ratings/<str:event_id>/", api.rating_status, name="api_rating_status"),
    path("api/token/", obtain_token, name="api_token"),
    path("api/token/revoke/", revoke_token, name="api_token_revoke"),
    path("api/token/revoke-all/", revoke_all_tokens, name="api_token_revoke_all"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
]
